"""Dataset loading: the format, real-world quirks handled, and errors that say where."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from models.dataset import Dataset
from models.errors import DatasetError

FIXTURES = Path(__file__).parents[2] / "fixtures"


def make(tmp_path: Path, yaml_text: str, files: dict[str, str]) -> Path:
    (tmp_path / "dataset.yaml").write_text(textwrap.dedent(yaml_text))
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip())
    return tmp_path


BASIC = textwrap.dedent(
    """
    name: t
    files: ["data/*.csv"]
    timestamp: {column: time}
    asset_type: {value: pump}
    split: {train_rows: 2}
    """
)


def test_nab_fixture_loads_as_seven_labelled_assets() -> None:
    ds = Dataset(FIXTURES / "nab-realknowncause")
    recs = list(ds.recordings())
    assert len(recs) == 7
    assert {r.asset_type for r in recs} == {"machine"}
    assert all(list(r.signals) == ["value"] for r in recs)  # the label is not a signal
    machine = next(r for r in recs if "machine_temperature" in r.file)
    assert machine.rows == 22695
    assert np.all(np.diff(machine.t) >= 0)  # the clock step back is sorted into place
    report = next(r for r in ds.reports if "machine_temperature" in r.file)
    assert report.out_of_order == 1
    assert machine.label is not None and int(machine.label.sum()) == 2268
    assert int(machine.train.sum()) == 600 and machine.train[:600].all()
    assert len(ds.digest) == 64


def test_defaults_every_numeric_column_one_asset_per_file(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        BASIC,
        {
            "data/p1.csv": "time,flow,note,pressure\n"
            "2026-01-01T00:00:00Z,1.5,ok,3\n"
            "2026-01-01T00:01:00Z,,ok,4\n"
            "2026-01-01T00:02:00Z,2.5,ok,x\n"  # one bad cell in ten: still a signal
            + "".join(f"2026-01-01T00:{m:02d}:00Z,1,ok,{m}\n" for m in range(3, 10)),
            "data/p2.csv": """
                time,flow,note,pressure
                2026-01-01T00:00:00+01:00,7,a,1
                2026-01-01T00:05:00+01:00,8,b,2
            """,
        },
    )
    ds = Dataset(folder)
    recs = list(ds.recordings())
    assert [r.asset_id for r in recs] == ["data/p1", "data/p2"]
    p1, p2 = recs
    assert list(p1.signals) == ["flow", "pressure"]  # 'note' is text, not a signal
    assert np.isnan(p1.signals["flow"][1])  # empty cell: missing
    assert np.isnan(p1.signals["pressure"][2])  # not a number: missing, counted
    assert p1.signals["pressure"][:2].tolist() == [3.0, 4.0]
    rep = ds.reports[0]
    assert rep.bad_cells == {"pressure": 1} and rep.first_bad_cell == {"pressure": 4}
    assert p2.t[0] == p1.t[0] - 3600  # the offset is honoured
    assert p1.train.tolist() == [True, True] + [False] * 8


def test_asset_column_splits_a_file_and_epoch_ms_times(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        """
        name: t
        files: ["*.csv"]
        delimiter: ";"
        timestamp: {column: ts, unit: ms}
        asset: {column: unit}
        asset_type: {column: type}
        signals: [temp]
        labels: {anomaly: bad}
        split: {train_until: "2026-01-01T00:00:01Z"}
        """,
        {
            "all.csv": """
                ts;unit;type;temp;bad
                1767225600000;u1;fan;20;0
                1767225600000;u2;pump;30;0
                1767225602000;u1;fan;21;1
                1767225601000;u2;pump;31;
            """
        },
    )
    recs = {r.asset_id: r for r in Dataset(folder).recordings()}
    assert set(recs) == {"u1", "u2"}
    assert recs["u1"].asset_type == "fan" and recs["u2"].asset_type == "pump"
    assert recs["u1"].t.tolist() == [1767225600.0, 1767225602.0]
    assert recs["u1"].label is not None and recs["u1"].label.tolist() == [0.0, 1.0]
    assert np.isnan(recs["u2"].label[1])  # empty: unknown
    assert recs["u1"].train.tolist() == [True, False]
    assert recs["u2"].line.tolist() == [3, 5]


def test_rows_with_bad_times_are_left_out_and_counted(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        BASIC,
        {
            "data/a.csv": """
                time,v
                2026-01-01T00:00:00Z,1
                yesterday,2
                2026-01-01T00:02:00Z,3
            """
        },
    )
    ds = Dataset(folder)
    (rec,) = ds.recordings()
    assert rec.signals["v"].tolist() == [1.0, 3.0]
    assert ds.reports[0].bad_times == 1 and ds.reports[0].first_bad_time == 3


@pytest.mark.parametrize(
    ("yaml_text", "files", "where", "why"),
    [
        (BASIC.replace('"data/*.csv"', '"nothing/*.csv"'), {}, "files[0]", "matches no file"),
        (BASIC.replace("{value: pump}", "{}"), {}, "asset_type", "exactly one of"),
        (BASIC.replace("train_rows: 2", "train_rows: -1"), {}, "split.train_rows", "0"),
        (BASIC + "delimiter: ';;'\n", {}, "delimiter", "single character"),
        (
            BASIC + "signals: [flow]\n",
            {"data/a.csv": "time,v\n2026-01-01,1\n"},
            "signals",
            "none of the signals ['flow']",
        ),
        (
            BASIC.replace("column: time", "column: when"),
            {"data/a.csv": "time,v\n2026-01-01,1\n"},
            "header",
            "no column 'when'",
        ),
        (BASIC, {"data/a.csv": "time,v\nmonday,1\n"}, "column 'time'", "no row has a valid time"),
        (
            BASIC + "labels: {anomaly: y}\n",
            {"data/a.csv": "time,v,y\n2026-01-01,1,2\n"},
            "line 2, column 'y'",
            "is not 0 or 1",
        ),
        (BASIC + "operating: 'state ==== 1'\n", {}, "operating", "not a valid expression"),
        (BASIC + "operating: {pump: 'sqrt(v)'}\n", {}, "operating", "for 'pump'"),
        (BASIC + "operating: {}\n", {}, "operating", "at least one asset type"),
        (BASIC + "operating: ' '\n", {}, "operating", "is empty"),
        (
            BASIC + "operating: run_state==1\n",
            {"data/a.csv": "time,v\n2026-01-01,1\n"},
            "operating",
            "pump's operating condition 'run_state==1' reads column 'run_state'",
        ),
        ("name: [unclosed\n", {}, "line", "not valid YAML"),
        (BASIC + "colour: red\n", {}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_file_the_place_and_why(
    tmp_path: Path, yaml_text: str, files: dict[str, str], where: str, why: str
) -> None:
    files = files or {"data/a.csv": "time,v\n2026-01-01T00:00:00Z,1\n"}
    folder = make(tmp_path, yaml_text, files)
    with pytest.raises(DatasetError) as err:
        list(Dataset(folder).recordings())
    assert where in err.value.key
    assert why in err.value.why
    assert str(tmp_path) in err.value.source


def test_an_asset_whose_type_changes_is_refused(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        BASIC.replace("{value: pump}", "{column: kind}").replace("train_rows: 2", "train_rows: 0")
        + "asset: {column: id}\n",
        {"data/a.csv": "time,id,kind,v\n2026-01-01,a,fan,1\n2026-01-02,a,pump,2\n"},
    )
    with pytest.raises(DatasetError, match="asset 'a' has asset types"):
        list(Dataset(folder).recordings())


def test_operating_columns_are_read_beside_the_signals_not_as_signals(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        BASIC.replace("{value: pump}", "{column: kind}")
        + "asset: {column: id}\n"
        + "signals: [temp, flow]\n"
        + "operating: {pump: 'run_state == 1', fan: 'amps > 0.5'}\n",
        {
            "data/a.csv": """
                time,id,kind,temp,flow,run_state,amps
                2026-01-01T00:00:00Z,p,pump,20,5,1,
                2026-01-01T00:01:00Z,p,pump,21,6,0,
                2026-01-01T00:00:00Z,f,fan,30,,,2.5
                2026-01-01T00:01:00Z,f,fan,31,,,x
            """
        },
    )
    ds = Dataset(folder, context=["setpoint", "temp"])
    assert ds.spec.operating_for("pump") == "run_state==1"  # spaces dropped: a feature name
    assert ds.spec.operating_for("chiller") is None
    assert ds.spec.operating_columns("fan") == ("amps",)
    recs = {r.asset_id: r for r in ds.recordings()}
    pump, fan = recs["p"], recs["f"]
    assert list(pump.signals) == ["temp", "flow"]  # the run state is no candidate signal
    assert pump.context["run_state"].tolist() == [1.0, 0.0]
    assert "setpoint" not in pump.context  # a context column the file lacks: none
    assert "temp" not in pump.context  # a signal stays a signal
    assert fan.context["amps"][0] == 2.5 and np.isnan(fan.context["amps"][1])
    assert ds.reports[0].bad_cells == {"amps": 1}  # counted like a signal's bad cell


def test_a_dataset_may_say_when_all_its_machines_run(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        BASIC + "operating: running\n",
        {"data/a.csv": "time,v,running\n2026-01-01T00:00:00Z,1,1\n2026-01-01T00:01:00Z,2,0\n"},
    )
    ds = Dataset(folder)
    (rec,) = ds.recordings()
    assert ds.spec.operating_for("pump") == "running"
    assert list(rec.signals) == ["v", "running"]  # every numeric column: here a signal too
    assert rec.context == {}
