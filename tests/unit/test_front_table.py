"""OpenZFS's number and table formats, as the front end prints them."""

from __future__ import annotations

import pytest

from protocol.errors import ConfigError
from tests.conftest import ZFS_STREAMS
from workers.zfs.front_table import humanize, is_property, nicenum, parse_size, table
from workers.zfs.parse import parse_get, parse_list


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        # zfs_nicenum: whole multiples print without decimals, others in at most 5 characters
        (0, "0B"),
        (512, "512B"),
        (1024, "1K"),
        (25600, "25K"),
        (1536, "1.50K"),
        (580096, "566K"),
        (12189184, "11.6M"),
        (10 * 2**30 - 4096, "10.0G"),
        (2**60, "1E"),
    ],
)
def test_nicenum(value: int, shown: str) -> None:
    assert nicenum(value) == shown


def test_nicenum_never_exceeds_five_characters_on_recorded_sizes() -> None:
    columns = ("name", "guid", "createtxg", "creation", "origin", "type", "used", "referenced",
               "written", "receive_resume_token")  # fmt: skip
    for obj in parse_list((ZFS_STREAMS / "zfs-list.tsv").read_text(), columns):
        for size in (obj.used, obj.referenced, obj.written):
            shown = nicenum(size)
            assert len(shown) <= 5 or size % 1024 ** "BKMGTPE".index(shown[-1]) == 0
            # the shown value is within rounding of the exact one
            number, unit = float(shown[:-1]), "BKMGTPE".index(shown[-1])
            assert abs(number * 1024**unit - size) <= 0.05 * max(size, 1)


@pytest.mark.parametrize(
    ("text", "size"), [("8M", 8 << 20), ("1.5G", 3 << 29), ("4096", 4096), ("10KiB", 10240)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "8X", "-1"])
def test_parse_size_refuses_junk(text: str) -> None:
    with pytest.raises(ConfigError, match="bad numeric value"):
        parse_size(text)


def test_humanize_limits_dates_and_parsable() -> None:
    assert humanize("quota", "0", parsable=False) == "none"
    assert humanize("quota", "0", parsable=True) == "0"
    assert humanize("refer", "25600", parsable=False) == "25K"
    assert humanize("guid", "18426623297229610250", parsable=False) == "18426623297229610250"
    assert humanize("creation", "1795849222", parsable=False)[-4:].isdigit()


def test_table_scripted_and_aligned() -> None:
    rows = [["tank", "25K"], ["tank/a", "11.6M"]]
    assert table(["NAME", "USED"], rows, scripted=True) == "tank\t25K\ntank/a\t11.6M\n"
    lines = table(["NAME", "USED"], rows, scripted=False, right=[False, True]).splitlines()
    assert lines == ["NAME     USED", "tank      25K", "tank/a  11.6M"]


def test_every_property_real_zfs_printed_is_known() -> None:
    for fixture in ("zfs-get-all-clone.tsv", "zfs-get-all-snapshot.tsv"):
        lines = (ZFS_STREAMS / fixture).read_text().splitlines()
        recorded = parse_get("".join(f"{line}\n" for line in lines if "\t" in line))
        for props in recorded.values():
            unknown = [p for p in props if not is_property(p)]
            assert unknown == []
    assert is_property("zfleet:role")
    assert not is_property("frobness")
