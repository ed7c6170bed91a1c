import pyarrow as pa
import pytest

from curation.job_plan import PlanMismatchError, load_or_create_plan
from curation.release import ReleaseWriter


def _plan() -> pa.Table:
    return pa.table({"image_id": [0, 1], "uri": ["a.jpg", "b.jpg"], "metadata": ["{}", "{}"]})


def test_the_first_plan_is_kept_and_other_settings_are_refused(tmp_path):
    writer = ReleaseWriter(str(tmp_path / "out"))
    plan, resumed = load_or_create_plan(writer, {"input": "x", "preset": "sa1b"}, _plan)
    assert not resumed and plan.equals(_plan())

    def must_not_list():
        raise AssertionError("a resumed job must not list its input again")

    again, resumed = load_or_create_plan(writer, {"preset": "sa1b", "input": "x"}, must_not_list)
    assert resumed and again.equals(plan)
    with pytest.raises(PlanMismatchError, match="preset differ"):
        load_or_create_plan(writer, {"input": "x", "preset": "official"}, _plan)


def test_an_output_with_other_files_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(PlanMismatchError, match="not empty"):
        load_or_create_plan(ReleaseWriter(str(tmp_path / "out")), {"input": "x"}, _plan)
