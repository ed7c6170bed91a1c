"""Geography and income representation: the country table, lookups, and known answers by hand."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
import reverse_geocode

from analysis.geography import (
    DEFAULT_TABLE,
    INCOME_LEVELS,
    MAX_UNRESOLVED_EXAMPLES,
    NO_REGION,
    REGIONS,
    UNCLASSIFIED_INCOME,
    CountryTable,
    GeographyAccumulator,
    geography_columns,
)

NAN = float("nan")
PARIS = (48.8566, 2.3522)
# image_id, n_masks, country_code, country, lat, lon -> expected iso2 (None: no location, "?": unresolved)
ROWS = [
    (1, 10, "KE", None, NAN, NAN, "KE"),
    (2, 20, "KEN", None, NAN, NAN, "KE"),
    (3, 30, None, "Nigeria", NAN, NAN, "NG"),
    (4, 40, None, "France", NAN, NAN, "FR"),
    (5, 50, "fr", None, NAN, NAN, "FR"),
    (6, 60, None, None, *PARIS, "FR"),
    (7, 70, None, None, -23.5505, -46.6333, "BR"),  # São Paulo
    (8, 80, None, "Brazil", NAN, NAN, "BR"),
    (9, 90, None, None, 40.7128, -74.0060, "US"),  # New York
    (10, 100, None, "USA", NAN, NAN, "US"),
    (11, 110, None, None, 35.6762, 139.6503, "JP"),  # Tokyo
    (12, 120, None, None, -33.8688, 151.2093, "AU"),  # Sydney
    (13, 130, None, None, 43.6532, -79.3832, "CA"),  # Toronto
    (14, 140, None, None, 6.5244, 3.3792, "NG"),  # Lagos
    (15, 150, None, " ethiopia ", NAN, NAN, "ET"),
    (16, 160, None, None, -1.2921, 36.8219, "KE"),  # Nairobi
    (17, 170, None, "Venezuela", NAN, NAN, "VE"),
    (18, 180, None, None, NAN, NAN, None),
    (19, 190, None, "Atlantis", NAN, NAN, "?"),
    (20, 200, "", None, NAN, NAN, None),  # a blank code is no location
    (21, 210, None, "Ivory Coast", NAN, NAN, "CI"),
    (22, 220, "XX", None, *PARIS, "?"),  # the code decides; its coordinates are not consulted
]


@pytest.fixture(scope="module")
def table() -> CountryTable:
    return CountryTable.load()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame([r[:6] for r in ROWS], columns=["image_id", "n_masks", "country_code", "country", "lat", "lon"])


@pytest.fixture(scope="module")
def accumulator(table: CountryTable, frame: pd.DataFrame) -> GeographyAccumulator:
    acc = GeographyAccumulator(table)
    acc.add(frame)
    return acc


def test_csv_fy2023_counts_and_regions() -> None:
    with open(DEFAULT_TABLE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 250  # 249 ISO 3166-1 + Kosovo
    assert len({r["iso2"] for r in rows}) == len({r["iso3"] for r in rows}) == 250
    # World Bank FY2023 (July 2022): counted per economy (Guernsey and Jersey share "Channel Islands").
    economies = {r["wb_code"]: r["income_group"] for r in rows if r["wb_code"]}
    counts = Counter(economies.values())
    assert counts == {
        "Low income": 28,
        "Lower middle income": 54,
        "Upper middle income": 54,
        "High income": 81,
        "": 1,  # Venezuela, unclassified in FY2023
    }
    assert sum(n for group, n in counts.items() if group) == 217
    assert economies["VEN"] == "" and economies["ZMB"] == "Low income"
    assert {r["region"] for r in rows} == set(REGIONS) | {""}
    assert [r["iso2"] for r in rows if not r["region"]] == ["AQ"]
    north_america = sorted(r["iso2"] for r in rows if r["region"] == "North America")
    assert north_america == ["BM", "CA", "GL", "PM", "US"]


def test_resolve(table: CountryTable) -> None:
    for value, iso2 in [
        ("KE", "KE"),
        ("ken", "KE"),
        ("Kenya", "KE"),
        ("  united   states of AMERICA ", "US"),
        ("USA", "US"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("Russia", "RU"),
        ("South Korea", "KR"),
        ("Korea, Rep.", "KR"),  # the World Bank's name
        ("Iran", "IR"),
        ("Vietnam", "VN"),
        ("Viet Nam", "VN"),
        ("Côte d'Ivoire", "CI"),
        ("Cote d'Ivoire", "CI"),
        ("Ivory Coast", "CI"),
        ("Czech Republic", "CZ"),
        ("Czechia", "CZ"),
        ("Turkey", "TR"),
        ("Türkiye", "TR"),
        ("Kosovo", "XK"),
        ("XKX", "XK"),
        ("São Tomé and Príncipe", "ST"),
    ]:
        country = table.resolve(value)
        assert country is not None and country.iso2 == iso2, value
    assert table.resolve("Atlantis") is None
    assert table.resolve("") is None


def test_income_levels(table: CountryTable) -> None:
    expect = {
        "KE": ("Lower middle income", "Middle income"),
        "NG": ("Lower middle income", "Middle income"),
        "FR": ("High income", "High income"),
        "BR": ("Upper middle income", "Middle income"),
        "ET": ("Low income", "Low income"),
        "ZM": ("Low income", "Low income"),
        "VE": (None, None),
        "AI": (None, None),  # Anguilla: not a World Bank economy
    }
    for iso2, (group, level) in expect.items():
        country = table.resolve(iso2)
        assert (country.income_group, country.income_level) == (group, level), iso2
    assert {c.income_level for c in table.countries} == {*INCOME_LEVELS, None}


def test_every_reverse_geocode_country_resolves(table: CountryTable) -> None:
    bundled = Path(reverse_geocode.__file__).with_name("countries.csv")
    with open(bundled, newline="", encoding="utf-8") as f:
        codes = {code for code, _ in csv.reader(f)} - {"AP", "EU"}  # MaxMind region pseudo-codes, no cities
    codes |= {place["country_code"] for place in reverse_geocode.GeocodeData()._locations}
    assert codes and [code for code in sorted(codes) if table.resolve(code) is None] == []


def test_from_latlon(table: CountryTable) -> None:
    lat = np.array([-1.2921, 48.8566, NAN, 95.0, 10.0, 0.0])
    lon = np.array([36.8219, 2.3522, 1.0, 0.0, 200.0, np.inf])
    found = table.from_latlon(lat, lon)
    assert [c and c.iso2 for c in found] == ["KE", "FR", None, None, None, None]
    assert table.from_latlon(np.array([]), np.array([])) == []


def test_geography_columns() -> None:
    assert geography_columns(["image_id", "n_masks", "width"]) == []
    assert geography_columns(["lat", "image_id"]) == []  # half a pair is no location
    assert geography_columns(["lon", "lat", "country"]) == ["country", "lat", "lon"]
    assert geography_columns(["longitude", "latitude", "country_code"]) == ["country_code", "latitude", "longitude"]


def test_per_country(accumulator: GeographyAccumulator) -> None:
    per = accumulator.per_country()
    assert list(per.columns) == [
        "iso2",
        "iso3",
        "name",
        "region",
        "income_group",
        "images",
        "masks",
        "masks_per_image",
        "share_images",
        "share_masks",
    ]
    expect = [  # sorted by images, then masks, descending
        ("KE", 3, 10 + 20 + 160),
        ("FR", 3, 40 + 50 + 60),
        ("US", 2, 90 + 100),
        ("NG", 2, 30 + 140),
        ("BR", 2, 70 + 80),
        ("CI", 1, 210),
        ("VE", 1, 170),
        ("ET", 1, 150),
        ("CA", 1, 130),
        ("AU", 1, 120),
        ("JP", 1, 110),
    ]
    assert list(zip(per["iso2"], per["images"], per["masks"])) == expect
    # the expected column of ROWS, recounted: every located row lands in its country
    located = Counter(r[6] for r in ROWS if r[6] not in (None, "?"))
    assert dict(zip(per["iso2"], per["images"])) == located
    assert per["images"].sum() == 18 and per["masks"].sum() == 1740
    assert per.loc[per["iso2"] == "KE", "share_images"].item() == pytest.approx(3 / 18)
    assert per.loc[per["iso2"] == "KE", "share_masks"].item() == pytest.approx(190 / 1740)
    assert per.loc[per["iso2"] == "KE", "masks_per_image"].item() == pytest.approx(190 / 3)
    assert per["share_images"].sum() == pytest.approx(1.0)
    assert per.loc[per["iso2"] == "VE", "income_group"].isna().all()


def test_table1(accumulator: GeographyAccumulator) -> None:
    t1 = accumulator.table1()
    assert list(t1["group"]) == [*REGIONS, NO_REGION, *INCOME_LEVELS, UNCLASSIFIED_INCOME]
    assert list(t1["kind"]) == ["region"] * 6 + ["income"] * 4
    got = {g: (c, i, m) for g, c, i, m in zip(t1["group"], t1["countries"], t1["images"], t1["masks"])}
    assert got == {
        "Africa": (4, 7, 190 + 170 + 150 + 210),  # KE NG ET CI
        "Asia & Oceania": (2, 2, 110 + 120),  # JP AU
        "Europe": (1, 3, 150),  # FR
        "Latin America & Caribbean": (2, 3, 150 + 170),  # BR VE
        "North America": (2, 3, 190 + 130),  # US CA
        NO_REGION: (0, 0, 0),
        "High income": (5, 8, 150 + 190 + 110 + 120 + 130),  # FR US JP AU CA
        "Middle income": (4, 8, 190 + 170 + 150 + 210),  # KE NG BR CI
        "Low income": (1, 1, 150),  # ET
        UNCLASSIFIED_INCOME: (1, 1, 170),  # VE
    }
    for kind in ("region", "income"):
        part = t1[t1["kind"] == kind]
        assert part["images"].sum() == 18 and part["masks"].sum() == 1740
        assert part["share_images"].sum() == pytest.approx(1.0)
        assert part["share_masks"].sum() == pytest.approx(1.0)
    africa = t1[t1["group"] == "Africa"].iloc[0]
    assert africa["share_images"] == pytest.approx(7 / 18)
    assert africa["masks_per_image"] == pytest.approx(720 / 7)
    assert np.isnan(t1[t1["group"] == NO_REGION]["masks_per_image"].item())


def test_coverage(accumulator: GeographyAccumulator) -> None:
    coverage = accumulator.coverage()
    coverage["unresolved_examples"] = sorted(coverage["unresolved_examples"])
    assert coverage == {
        "images_total": 22,
        "images_located": 18,
        "images_no_location": 2,
        "images_unresolved": 2,
        "unresolved_examples": ["Atlantis", "XX"],
    }


def test_two_batches_equal_one(table: CountryTable, frame: pd.DataFrame, accumulator: GeographyAccumulator) -> None:
    split = GeographyAccumulator(table)
    split.add(frame.iloc[:11])
    split.add(frame.iloc[:0])
    split.add(frame.iloc[11:])
    pdt.assert_frame_equal(split.per_country(), accumulator.per_country())
    pdt.assert_frame_equal(split.table1(), accumulator.table1())
    assert split.coverage() == accumulator.coverage()


def test_latitude_longitude_only_and_empty(table: CountryTable) -> None:
    acc = GeographyAccumulator(table)
    assert acc.per_country().empty and acc.table1()["images"].sum() == 0
    acc.add(
        pd.DataFrame(
            {
                "image_id": [1, 2, 3],
                "n_masks": [5, 7, 9],
                "latitude": [-1.29, NAN, 91.0],
                "longitude": [36.82, 1.0, 0.0],
            }
        )
    )
    assert list(acc.per_country()["iso2"]) == ["KE"]
    cov = acc.coverage()
    assert (cov["images_located"], cov["images_no_location"], cov["images_unresolved"]) == (1, 1, 1)


def test_unresolved_examples_are_capped(table: CountryTable) -> None:
    acc = GeographyAccumulator(table)
    names = [f"Nowhere {i}" for i in range(MAX_UNRESOLVED_EXAMPLES + 50)]
    acc.add(pd.DataFrame({"image_id": range(len(names)), "n_masks": 1, "country": names}))
    cov = acc.coverage()
    assert cov["images_unresolved"] == len(names) and cov["images_located"] == 0
    assert len(cov["unresolved_examples"]) == MAX_UNRESOLVED_EXAMPLES
