"""Geographic and income representation of a release (the SAM paper, section 6 and Table 1).

Every image with location metadata is mapped to one country of `analysis/data/countries.csv`
(ISO 3166-1, 250 rows with Kosovo): its region (the paper's five, from the UN M49 geoscheme)
and its World Bank income group (FY2023, July 2022). Sources: `analysis/data/README.md`.

A location is, per row of an images index, the first non-null of `country_code` and `country`
(an ISO2 or ISO3 code or a name), else `lat`/`lon` (or `latitude`/`longitude`), reverse geocoded
offline to the nearest GeoNames city with `reverse_geocode`. `GeographyAccumulator` keeps only
per-country counters, so a release of any size streams through it batch by batch.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REGIONS: tuple[str, ...] = (
    "Africa",
    "Asia & Oceania",
    "Europe",
    "Latin America & Caribbean",
    "North America",
)
"""The paper's Table 1 regions, in its order."""
INCOME_LEVELS: tuple[str, ...] = ("High income", "Middle income", "Low income")
"""The paper's income levels: the World Bank's upper- and lower-middle groups merged into one."""
INCOME_GROUPS: tuple[str, ...] = ("High income", "Upper middle income", "Lower middle income", "Low income")
"""The World Bank's four income groups."""
NO_REGION = "No region"
"""Table 1 row for located images in a country without an M49 region (only Antarctica)."""
UNCLASSIFIED_INCOME = "Unclassified income"
"""Table 1 row for located images in a country the World Bank did not classify in FY2023."""
DEFAULT_TABLE = Path(__file__).with_name("data") / "countries.csv"
MAX_UNRESOLVED_EXAMPLES = 100

_INCOME_LEVEL = {
    "High income": "High income",
    "Upper middle income": "Middle income",
    "Lower middle income": "Middle income",
    "Low income": "Low income",
}
# Common names that are neither the ISO 3166 name nor the World Bank's, nor ISO2/ISO3 codes.
_ALIASES: dict[str, str] = {
    "USA": "US",
    "U.S.": "US",
    "U.S.A.": "US",
    "United States": "US",
    "UK": "GB",
    "U.K.": "GB",
    "United Kingdom": "GB",
    "Great Britain": "GB",
    "Britain": "GB",
    "England": "GB",
    "Scotland": "GB",
    "Wales": "GB",
    "Northern Ireland": "GB",
    "Russia": "RU",
    "South Korea": "KR",
    "Republic of Korea": "KR",
    "North Korea": "KP",
    "Iran": "IR",
    "Vietnam": "VN",
    "Ivory Coast": "CI",
    "Czech Republic": "CZ",
    "Turkey": "TR",
    "Türkiye": "TR",
    "Syria": "SY",
    "Laos": "LA",
    "Bolivia": "BO",
    "Venezuela": "VE",
    "Tanzania": "TZ",
    "Moldova": "MD",
    "Macedonia": "MK",
    "North Macedonia": "MK",
    "Taiwan": "TW",
    "Palestine": "PS",
    "Micronesia": "FM",
    "Democratic Republic of the Congo": "CD",
    "DR Congo": "CD",
    "DRC": "CD",
    "Congo-Kinshasa": "CD",
    "Republic of the Congo": "CG",
    "Congo-Brazzaville": "CG",
    "Cape Verde": "CV",
    "Swaziland": "SZ",
    "Burma": "MM",
    "Brunei": "BN",
    "Vatican": "VA",
    "Vatican City": "VA",
    "UAE": "AE",
    "Macau": "MO",
    "East Timor": "TL",
    "Falkland Islands": "FK",
    "Saint Helena": "SH",
    "Saint Martin": "MF",
    "Sint Maarten": "SX",
    "Libyan Arab Jamahiriya": "LY",
    "Palestinian Territory": "PS",
    "Holy See (Vatican City State)": "VA",
    "Bonaire, Saint Eustatius and Saba": "BQ",
    "Saint Bartelemey": "BL",
}


def _key(value: str) -> str:
    """Case-, accent-, punctuation- and space-insensitive lookup key."""
    text = unicodedata.normalize("NFKD", value.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("&", " and ").replace("'", "").replace("’", "")  # "Côte d'Ivoire" -> "cote divoire"
    text = re.sub(r"[^0-9a-z]+", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Country:
    """One row of the country table. `income_group` is None where the World Bank gives none."""

    iso2: str
    iso3: str
    name: str
    region: str | None
    income_group: str | None

    @property
    def income_level(self) -> str | None:
        """The paper's three levels: "High income", "Middle income", "Low income"; None if unclassified."""
        return _INCOME_LEVEL.get(self.income_group or "")


class CountryTable:
    """ISO 3166-1 countries with region and income group; resolves codes, names and coordinates."""

    def __init__(self, countries: Iterable[Country], aliases: dict[str, str] | None = None) -> None:
        self.countries: tuple[Country, ...] = tuple(countries)
        self._by_iso2 = {c.iso2.upper(): c for c in self.countries}
        self._by_iso3 = {c.iso3.upper(): c for c in self.countries}
        self._by_name: dict[str, Country] = {}
        for c in self.countries:
            self._by_name.setdefault(_key(c.name), c)
        for alias, iso2 in (aliases or {}).items():
            if iso2.upper() in self._by_iso2:
                self._by_name.setdefault(_key(alias), self._by_iso2[iso2.upper()])

    @classmethod
    def load(cls, path: str | Path | None = None) -> CountryTable:
        """Read a countries CSV (default: the packaged `analysis/data/countries.csv`).

        Columns iso2, iso3, name, region, income_group; an optional wb_name column (the World
        Bank's name for the economy) is indexed as another name. Empty cells read as None."""
        countries, aliases = [], dict(_ALIASES)
        with open(path or DEFAULT_TABLE, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                countries.append(
                    Country(
                        iso2=row["iso2"],
                        iso3=row["iso3"],
                        name=row["name"],
                        region=row["region"] or None,
                        income_group=row["income_group"] or None,
                    )
                )
                if row.get("wb_name") and row.get("wb_code") == row["iso3"]:
                    aliases.setdefault(row["wb_name"], row["iso2"])
        return cls(countries, aliases)

    def __len__(self) -> int:
        return len(self.countries)

    def resolve(self, value: str) -> Country | None:
        """The country for an ISO2 code, ISO3 code or name (case, accents, spaces and punctuation
        ignored; ISO 3166, World Bank and common names such as "USA", "UK", "Russia", "Ivory Coast"),
        or None."""
        if not isinstance(value, str):
            return None
        text = value.strip()
        code = text.upper()
        if len(code) == 2 and code in self._by_iso2:
            return self._by_iso2[code]
        if len(code) == 3 and code in self._by_iso3:
            return self._by_iso3[code]
        return self._by_name.get(_key(text))

    def from_latlon(self, lat: np.ndarray, lon: np.ndarray) -> list[Country | None]:
        """The country of each coordinate (N float degrees each, WGS84), by the nearest GeoNames city.

        `reverse_geocode` returns the nearest city in its bundled GeoNames table however far away it
        is (a point at sea gets the nearest coast's country) and measures distance in plain degrees
        (no wrap at the antimeridian). NaN, infinite or out-of-range coordinates (|lat| > 90,
        |lon| > 180) give None; they never fail the batch."""
        lat = np.asarray(lat, dtype=np.float64).reshape(-1)
        lon = np.asarray(lon, dtype=np.float64).reshape(-1)
        if lat.shape != lon.shape:
            raise ValueError(f"lat and lon differ in length: {lat.shape[0]} != {lon.shape[0]}")
        out: list[Country | None] = [None] * lat.shape[0]
        valid = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        rows = np.flatnonzero(valid)
        if rows.size:
            import reverse_geocode  # loads its city table (~1 s) on first use only

            found = reverse_geocode.search([(float(lat[i]), float(lon[i])) for i in rows])
            for i, place in zip(rows, found):
                out[i] = self._by_iso2.get(str(place.get("country_code", "")).upper())
        return out


def geography_columns(columns: Iterable[str]) -> list[str]:
    """The location columns an images index has, in lookup order: country_code, country, then
    lat+lon or latitude+longitude (a pair only when both exist). Empty when it has none."""
    have = set(columns)
    found = [c for c in ("country_code", "country") if c in have]
    for pair in (("lat", "lon"), ("latitude", "longitude")):
        if set(pair) <= have:
            found.extend(pair)
    return found


def _present(series: pd.Series) -> np.ndarray:
    """Non-null and, for strings, non-blank (N bool)."""
    present = series.notna().to_numpy(bool)
    text = series.astype("string").str.strip()
    return present & (text != "").fillna(False).to_numpy(bool)


class GeographyAccumulator:
    """Images and masks per country over any number of images-index batches.

    State is per-country counters plus four totals and at most `MAX_UNRESOLVED_EXAMPLES` distinct
    strings that did not resolve; an image_id seen in two batches is counted twice."""

    def __init__(self, table: CountryTable | None = None) -> None:
        self.table = table or CountryTable.load()
        self._images: Counter[str] = Counter()  # iso2 -> images
        self._masks: Counter[str] = Counter()  # iso2 -> masks
        self.images_total = 0
        self.images_no_location = 0
        self.images_unresolved = 0
        self.unresolved_examples: dict[str, None] = {}

    def _unresolved(self, value: str) -> None:
        self.images_unresolved += 1
        if len(self.unresolved_examples) < MAX_UNRESOLVED_EXAMPLES:
            self.unresolved_examples.setdefault(value, None)

    def add(self, batch: pd.DataFrame) -> None:
        """Count one batch with columns image_id, n_masks and any of the location columns."""
        n = len(batch)
        if n == 0:
            return
        masks = pd.to_numeric(batch["n_masks"], errors="coerce").fillna(0).to_numpy(np.int64)
        iso2: list[str | None] = [None] * n
        todo = np.ones(n, bool)  # rows whose location is not decided yet
        for column in ("country_code", "country"):
            if column not in batch:
                continue
            rows = np.flatnonzero(todo & _present(batch[column]))
            values = batch[column].to_numpy(dtype=object)[rows].astype(str)
            resolved = {v: self.table.resolve(v) for v in set(values)}
            for i, value in zip(rows, values):
                country = resolved[value]
                if country is None:
                    self._unresolved(value.strip())
                else:
                    iso2[i] = country.iso2
            todo[rows] = False
        for lat_col, lon_col in (("lat", "lon"), ("latitude", "longitude")):
            if lat_col not in batch or lon_col not in batch:
                continue
            lat = pd.to_numeric(batch[lat_col], errors="coerce").to_numpy(np.float64)
            lon = pd.to_numeric(batch[lon_col], errors="coerce").to_numpy(np.float64)
            rows = np.flatnonzero(todo & ~np.isnan(lat) & ~np.isnan(lon))
            for i, country in zip(rows, self.table.from_latlon(lat[rows], lon[rows])):
                if country is None:
                    self._unresolved(f"({lat[i]}, {lon[i]})")
                else:
                    iso2[i] = country.iso2
            todo[rows] = False
        self.images_total += n
        self.images_no_location += int(todo.sum())
        for code, m in zip(iso2, masks):
            if code is not None:
                self._images[code] += 1
                self._masks[code] += int(m)

    @property
    def images_located(self) -> int:
        return sum(self._images.values())

    def coverage(self) -> dict:
        """images_total, images_located, images_no_location, images_unresolved, unresolved_examples."""
        return {
            "images_total": self.images_total,
            "images_located": self.images_located,
            "images_no_location": self.images_no_location,
            "images_unresolved": self.images_unresolved,
            "unresolved_examples": list(self.unresolved_examples),
        }

    def per_country(self) -> pd.DataFrame:
        """One row per country with at least one image, most images first.

        Columns iso2, iso3, name, region, income_group, images, masks, masks_per_image,
        share_images, share_masks (shares of all located images / masks)."""
        columns = ["iso2", "iso3", "name", "region", "income_group", "images", "masks"]
        rows = []
        for code, images in self._images.items():
            c = self.table.resolve(code)
            rows.append([c.iso2, c.iso3, c.name, c.region, c.income_group, images, self._masks[code]])
        frame = pd.DataFrame(rows, columns=columns).astype({"images": np.int64, "masks": np.int64})
        frame = frame.sort_values(["images", "masks", "iso2"], ascending=[False, False, True], ignore_index=True)
        total_images, total_masks = frame["images"].sum(), frame["masks"].sum()
        frame["masks_per_image"] = frame["masks"] / frame["images"]
        frame["share_images"] = frame["images"] / total_images if total_images else np.nan
        frame["share_masks"] = frame["masks"] / total_masks if total_masks else np.nan
        return frame

    def table1(self) -> pd.DataFrame:
        """The paper's Table 1: the five regions, `NO_REGION`, the three income levels, `UNCLASSIFIED_INCOME`.

        Columns group, kind ("region" / "income"), countries (distinct countries with >= 1 image),
        images, masks, masks_per_image, share_images, share_masks. Shares are of all located
        images / masks, so each kind's shares sum to 1."""
        per = self.per_country()
        region = per["region"].fillna(NO_REGION)
        level = per["income_group"].map(_INCOME_LEVEL).fillna(UNCLASSIFIED_INCOME)
        rows = []
        for kind, keys, groups in (
            ("region", region, (*REGIONS, NO_REGION)),
            ("income", level, (*INCOME_LEVELS, UNCLASSIFIED_INCOME)),
        ):
            for group in groups:
                part = per[keys == group]
                rows.append([group, kind, len(part), int(part["images"].sum()), int(part["masks"].sum())])
        frame = pd.DataFrame(rows, columns=["group", "kind", "countries", "images", "masks"])
        total_images, total_masks = per["images"].sum(), per["masks"].sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["masks_per_image"] = frame["masks"] / frame["images"].where(frame["images"] > 0)
        frame["share_images"] = frame["images"] / total_images if total_images else np.nan
        frame["share_masks"] = frame["masks"] / total_masks if total_masks else np.nan
        return frame
