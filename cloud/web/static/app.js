/* EdgeWatch dashboard: draws the charts a page embeds as JSON.
 *
 * Each chart is a <div data-chart="ID"> next to <script type="application/json" id="ID">
 * holding {tz, kind: "line"|"bars", x: [epoch seconds], y: {min, max, label},
 * series: [{label, color, unit, values}]}. Charts are drawn with uPlot (served from
 * /static/vendor) in the site's time zone. When a chart is drawn, its element gets
 * data-rendered="true" and data-points (how many values it shows).
 */
(function () {
  "use strict";

  function count(values) {
    var n = 0;
    for (var i = 0; i < values.length; i++) {
      if (values[i] !== null && values[i] !== undefined) n++;
    }
    return n;
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a >= 100) return Math.round(v).toLocaleString("en");
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2).replace(/\.?0+$/, "") || "0";
  }

  function formatter(tz, options) {
    options.timeZone = tz;
    try {
      return new Intl.DateTimeFormat("en-GB", options);
    } catch (e) {
      delete options.timeZone;
      return new Intl.DateTimeFormat("en-GB", options);
    }
  }

  function xValues(tz) {
    var day = formatter(tz, { day: "numeric", month: "short" });
    var time = formatter(tz, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    return function (u, splits, axisIdx, space, incr) {
      var before = null;
      return splits.map(function (ts) {
        var d = new Date(ts * 1000);
        var dd = day.format(d);
        if (incr >= 86400) return dd;
        var label = dd !== before ? time.format(d) + "\n" + dd : time.format(d);
        before = dd;
        return label;
      });
    };
  }

  function dateFormat(tz, daily) {
    var options = daily
      ? { timeZone: tz, weekday: "short", day: "numeric", month: "short" }
      : { timeZone: tz, day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    try {
      return new Intl.DateTimeFormat("en-GB", options);
    } catch (e) {
      delete options.timeZone;
      return new Intl.DateTimeFormat("en-GB", options);
    }
  }

  function yRange(spec, bars) {
    return function (u, min, max) {
      var lo = spec.min !== null && spec.min !== undefined ? spec.min : min;
      var hi = spec.max !== null && spec.max !== undefined ? spec.max : max;
      if (spec.max === null || spec.max === undefined) {
        var span = hi - lo;
        hi = hi + (span > 0 ? span * 0.08 : Math.abs(hi) * 0.1 || 1);
      }
      if (spec.min === null || spec.min === undefined) {
        var spanLo = hi - lo;
        lo = lo - (spanLo > 0 ? spanLo * 0.08 : Math.abs(lo) * 0.1 || 1);
      }
      if (bars && lo > 0) lo = 0;
      return [lo, hi];
    };
  }

  function draw(el) {
    var source = document.getElementById(el.getAttribute("data-chart"));
    if (!source || typeof uPlot === "undefined") return;
    var data = JSON.parse(source.textContent);
    var bars = data.kind === "bars";
    var tz = data.tz || "UTC";
    var height = parseInt(el.getAttribute("data-height") || "220", 10);
    var when = dateFormat(tz, bars);
    var sparse = data.x.length < 60;
    var series = [
      {
        label: bars ? "Day" : "Time",
        value: function (u, ts) {
          return ts === null || ts === undefined ? "–" : when.format(new Date(ts * 1000));
        },
      },
    ];
    var points = 0;
    data.series.forEach(function (s, i) {
      points += count(s.values);
      var cfg = {
        label: s.label,
        stroke: s.color,
        width: bars ? 1 : 2,
        spanGaps: false,
        value: function (u, v) {
          return v === null || v === undefined ? "–" : fmt(v) + (s.unit ? " " + s.unit : "");
        },
        points: { show: sparse && !bars, size: 6, fill: s.color },
      };
      if (bars) {
        cfg.fill = s.color + (i === 0 ? "d9" : "b3");
        cfg.paths = uPlot.paths.bars({ size: [i === 0 ? 0.72 : 0.36, 48], align: 0 });
        cfg.points = { show: false };
      }
      series.push(cfg);
    });
    var axis = {
      stroke: "#3f4a5a",
      grid: { stroke: "#e6eaf0", width: 1 },
      ticks: { stroke: "#cbd5e1", width: 1 },
    };
    var opts = {
      width: Math.max(260, el.clientWidth),
      height: height,
      tzDate: function (ts) {
        return uPlot.tzDate(new Date(ts * 1000), tz);
      },
      series: series,
      scales: {
        x: {
          time: true,
          range: function (u, min, max) {
            if (data.x_range) return data.x_range;
            return bars ? [min - 43200, max + 43200] : [min, max];
          },
        },
        y: { range: yRange(data.y || {}, bars) },
      },
      axes: [
        Object.assign({}, axis, { values: xValues(tz), size: 44 }),
        Object.assign({}, axis, {
          size: 58,
          label: data.y && data.y.label ? data.y.label : null,
          labelSize: 18,
          values: function (u, splits) {
            return splits.map(fmt);
          },
        }),
      ],
      legend: { live: true },
      cursor: { points: { size: 8 } },
    };
    var values = [data.x].concat(
      data.series.map(function (s) {
        return s.values;
      })
    );
    el.innerHTML = "";
    var plot = new uPlot(opts, values, el);
    el.setAttribute("data-points", String(points));
    el.setAttribute("data-rendered", "true");
    if ("ResizeObserver" in window) {
      new ResizeObserver(function () {
        var w = el.clientWidth;
        if (w > 0 && Math.abs(w - plot.width) > 2) plot.setSize({ width: w, height: height });
      }).observe(el);
    }
  }

  function drawAll() {
    var charts = document.querySelectorAll("[data-chart]");
    for (var i = 0; i < charts.length; i++) {
      try {
        draw(charts[i]);
      } catch (e) {
        charts[i].setAttribute("data-rendered", "error");
        if (window.console) console.error("chart " + charts[i].getAttribute("data-chart"), e);
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
