"""Routing rules: which model(s) a series goes to, chosen from its attributes (one YAML file).

Example::

    rules:                          # tried in file order; the first rule that matches wins
      - name: fundus                # required, unique
        description: colour fundus photographs
        modality: [OP]              # Modality is one of these
        sop_class: [OphthalmicPhotography8BitImageStorage, 1.2.840.10008.5.1.4.1.1.77.1.5.2]
        body_part: [EYE]            # BodyPartExamined, case-insensitive
        series_description: "(?i)fundus"     # a regex searched in SeriesDescription
        image_type: {include: [ORIGINAL], exclude: [LOCALIZER]}
        ranges: {SliceThickness: [0.5, 5.0], Rows: [256, null]}   # inclusive; null: open
        photometric: [RGB, YBR_FULL_422]      # PhotometricInterpretation is one of these
        models: [retina-vessels]    # required: models of the repository

A rule without conditions matches every object. Rules read only the attributes in
`RULE_ATTRIBUTES`, none of which identifies a patient; the reasons they give quote the values of
coded attributes, never the free text of SeriesDescription.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, UID_dictionary
from pydicom.values import TEXT_VR_DELIMS

from dicom_node.model import Route
from vision.errors import ConfigError

logger = logging.getLogger(__name__)

BUNDLED_RULES = Path(__file__).with_name("rules.yaml")

# Numeric attributes a `ranges` condition may test: acquisition and image attributes only.
NUMERIC_ATTRIBUTES: tuple[str, ...] = (
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NominalScannedPixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "KVP",
    "XRayTubeCurrent",
    "ExposureTime",
    "Exposure",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "EchoTrainLength",
    "ReconstructionDiameter",
    "SeriesNumber",
    "AcquisitionNumber",
    "LossyImageCompressionRatio",
    "ObjectiveLensPower",
    "HorizontalFieldOfView",
)
# Every attribute rules may read (the allow-list): coded attributes and the numeric ones above.
RULE_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "Modality",
        "SOPClassUID",
        "BodyPartExamined",
        "SeriesDescription",
        "ImageType",
        "PhotometricInterpretation",
        *NUMERIC_ATTRIBUTES,
    }
)
LIST_CONDITIONS = ("modality", "sop_class", "body_part", "photometric")
CONDITIONS = (*LIST_CONDITIONS, "series_description", "image_type", "ranges")
RULE_KEYS = ("name", "description", "models", *CONDITIONS)
Outcome = tuple[bool, str]  # matched, and why


# pydicom's SOP Class keywords (e.g. `VLMicroscopicImageStorage`) and their UIDs.
SOP_CLASS_KEYWORDS: dict[str, str] = {
    v[4]: uid for uid, v in UID_dictionary.items() if v[1] == "SOP Class" and v[4]
}


@dataclass(frozen=True)
class NumericRange:
    """`keyword` within [low, high] (None: open end); every value of a multi-valued attribute."""

    keyword: str
    low: float | None = None
    high: float | None = None

    def text(self) -> str:
        """The range as the rules file writes it."""
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"


@dataclass(frozen=True)
class Rule:
    """One routing rule, validated; an empty condition is not tested."""

    name: str
    models: tuple[str, ...]
    description: str = ""
    modality: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()  # UIDs
    body_part: tuple[str, ...] = ()  # upper case
    series_description: re.Pattern[str] | None = None
    image_type_include: tuple[str, ...] = ()
    image_type_exclude: tuple[str, ...] = ()
    ranges: tuple[NumericRange, ...] = ()
    photometric: tuple[str, ...] = ()

    def evaluate(self, ds: Dataset) -> tuple[bool, list[str]]:
        """Whether `ds` meets every condition, and one reason per condition tested."""
        results = [r for r in (check(self, ds) for check in _CHECKS) if r is not None]
        results += [_range_check(r, ds) for r in self.ranges]
        if not results:
            return True, ["no conditions: matches every object"]
        return all(ok for ok, _ in results), [reason for _, reason in results]


@dataclass(frozen=True)
class RoutingRules:
    """The rules of one file, in file order."""

    rules: tuple[Rule, ...]
    source: str = "bundled rules"

    @classmethod
    def load(
        cls, path: Path | None = None, known_models: Iterable[str] | None = None
    ) -> RoutingRules:
        """Read and validate a rules file (None: the bundled `dicom_node/rules.yaml`).

        With `known_models`, a rule of the file naming another model is a ConfigError; the
        bundled rules instead drop such rules (a repository may hold only some bundled models).
        """
        where = str(path) if path is not None else f"bundled rules ({BUNDLED_RULES.name})"
        file = BUNDLED_RULES if path is None else Path(path)
        if not file.is_file():
            raise ConfigError(f"{where}: no such rules file; give the path of a YAML rules file")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
        if path is None and known_models is not None:
            return cls.parse(data, where).restricted_to(known_models)
        return cls.parse(data, where, known_models)

    @classmethod
    def parse(
        cls, data: Any, where: str = "rules", known_models: Iterable[str] | None = None
    ) -> RoutingRules:
        """Validate a rules mapping (`{rules: [...]}`) and build the rules."""
        if not isinstance(data, dict) or set(data) != {"rules"}:
            raise ConfigError(f"{where}: expected a mapping with one key, 'rules' (a list)")
        items = data["rules"]
        if not isinstance(items, list) or not items:
            raise ConfigError(
                f"{where}.rules: expected a non-empty list of rules; with none, every series "
                "would be set aside"
            )
        rules = tuple(_parse_rule(item, f"{where}.rules[{i}]") for i, item in enumerate(items))
        _check_unique(rules, where)
        parsed = cls(rules, where)
        if known_models is not None:
            parsed.check_models(known_models)
        return parsed

    def check_models(self, known_models: Iterable[str]) -> None:
        """Raise ConfigError naming the rule when a rule routes to a model not in `known_models`."""
        known = sorted(set(known_models))
        for rule in self.rules:
            for model in rule.models:
                if model not in known:
                    hint = _did_you_mean(model, known)
                    raise ConfigError(
                        f"{self.source}: rule {rule.name!r}: models: {model!r} is not a model of "
                        f"the repository{hint}; known models: {known}"
                    )

    def restricted_to(self, known_models: Iterable[str]) -> RoutingRules:
        """The rules whose models are all in `known_models` (ConfigError when none is left)."""
        known = set(known_models)
        kept = tuple(rule for rule in self.rules if set(rule.models) <= known)
        dropped = [rule.name for rule in self.rules if rule not in kept]
        if not kept:
            raise ConfigError(
                f"{self.source}: the repository has none of the models these rules route to "
                f"({sorted({m for r in self.rules for m in r.models})}); give a rules file "
                "naming the repository's models"
            )
        if dropped:
            logger.info(
                "%s: rules %s left out: their models are not in the repository",
                self.source,
                dropped,
            )
        return RoutingRules(kept, self.source)

    def explain(self, ds: Dataset) -> list[tuple[Rule, bool, list[str]]]:
        """Every rule, in file order, with whether `ds` matches it and why."""
        return [(rule, *rule.evaluate(ds)) for rule in self.rules]

    def match(self, ds: Dataset) -> Route | None:
        """The route of the first rule `ds` matches; None when no rule does (set aside)."""
        for rule in self.rules:
            matched, reasons = rule.evaluate(ds)
            if matched:
                return Route(rule=rule.name, models=rule.models, reasons=tuple(reasons))
        return None


# --- parsing -------------------------------------------------------------------------------


def _parse_rule(item: Any, where: str) -> Rule:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with name, models and conditions")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: every rule needs a non-empty name (a string)")
    at = f"{where} ({name!r})"
    for key in item:
        if key not in RULE_KEYS:
            hint = _did_you_mean(str(key), RULE_KEYS)
            raise ConfigError(f"{at}: unknown key {key!r}{hint}; known keys: {list(RULE_KEYS)}")
    description = item.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{at}.description: expected text")
    include, exclude = _image_type_spec(item.get("image_type"), f"{at}.image_type")
    return Rule(
        name=name,
        models=_models(item.get("models"), f"{at}.models"),
        description=description,
        modality=_upper_list(item.get("modality"), f"{at}.modality"),
        sop_class=_sop_classes(item.get("sop_class"), f"{at}.sop_class"),
        body_part=_upper_list(item.get("body_part"), f"{at}.body_part"),
        series_description=_regex(item.get("series_description"), f"{at}.series_description"),
        image_type_include=include,
        image_type_exclude=exclude,
        ranges=_ranges(item.get("ranges"), f"{at}.ranges"),
        photometric=_upper_list(item.get("photometric"), f"{at}.photometric"),
    )


def _check_unique(rules: tuple[Rule, ...], where: str) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.name in seen:
            raise ConfigError(
                f"{where}.rules[{i}].name: {rule.name!r} is used twice; give each rule its own name"
            )
        seen.add(rule.name)


def _strings(value: Any, at: str) -> tuple[str, ...]:
    """A list of non-empty strings (a single string counts as a list of one); None: empty."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{at}: expected a list of non-empty strings, e.g. [A, B]")
    if not value:
        raise ConfigError(f"{at}: an empty list matches nothing; remove the key or list values")
    return tuple(v.strip() for v in value)


def _upper_list(value: Any, at: str) -> tuple[str, ...]:
    return tuple(v.upper() for v in _strings(value, at))


def _models(value: Any, at: str) -> tuple[str, ...]:
    if value is None or value == []:
        raise ConfigError(f"{at}: every rule needs models, e.g. models: [retina-vessels]")
    return _strings(value, at)


def _sop_classes(value: Any, at: str) -> tuple[str, ...]:
    keywords = SOP_CLASS_KEYWORDS
    uids = []
    for text in _strings(value, at):
        if text in keywords:
            uids.append(keywords[text])
        elif re.fullmatch(r"[0-9.]+", text) and UID(text).is_valid:
            uids.append(text)
        else:
            hint = _did_you_mean(text, keywords)
            raise ConfigError(
                f"{at}: {text!r} is neither a SOP Class UID nor a pydicom SOP Class keyword"
                f"{hint} (e.g. OphthalmicPhotography8BitImageStorage or 1.2.840.10008.5.1.4.1.1.7)"
            )
    return tuple(uids)


def _regex(value: Any, at: str) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{at}: expected a regular expression (text), e.g. '(?i)pcb'")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigError(f"{at}: {value!r} is not a valid regular expression: {exc}") from exc


def _image_type_spec(value: Any, at: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if value is None:
        return (), ()
    if not isinstance(value, dict) or not value or set(value) - {"include", "exclude"}:
        raise ConfigError(
            f"{at}: expected a mapping with include and/or exclude, "
            "e.g. {include: [ORIGINAL], exclude: [LOCALIZER]}"
        )
    include = _upper_list(value.get("include"), f"{at}.include")
    exclude = _upper_list(value.get("exclude"), f"{at}.exclude")
    return include, exclude


def _ranges(value: Any, at: str) -> tuple[NumericRange, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{at}: expected a mapping of attribute to [min, max], e.g. "
            "{SliceThickness: [0.5, 5.0]}"
        )
    return tuple(_range(str(k), v, f"{at}.{k}") for k, v in value.items())


def _range(keyword: str, bounds: Any, at: str) -> NumericRange:
    if keyword not in NUMERIC_ATTRIBUTES:
        hint = _did_you_mean(keyword, NUMERIC_ATTRIBUTES)
        raise ConfigError(
            f"{at}: {keyword!r} is not a numeric attribute rules may use{hint}; "
            f"use one of {list(NUMERIC_ATTRIBUTES)}"
        )
    numbers = (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(
            b is None or (isinstance(b, numbers) and not isinstance(b, bool)) for b in bounds
        )
        or bounds == [None, None]
    ):
        raise ConfigError(
            f"{at}: expected [min, max] (numbers; null for an open end), e.g. [0.5, 5]"
        )
    low, high = (None if b is None else float(b) for b in bounds)
    if low is not None and high is not None and low > high:
        raise ConfigError(f"{at}: min {low:g} is above max {high:g}; write [min, max]")
    return NumericRange(keyword, low, high)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- evaluation ----------------------------------------------------------------------------


def _coded(ds: Dataset, keyword: str) -> list[str] | None:
    """A coded (CS/UI) attribute's values, upper-cased; None when absent or empty."""
    value = ds.get(keyword)
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    values = [str(v).strip().upper() for v in items if v is not None and str(v).strip()]
    return values or None


def _free_text(ds: Dataset, keyword: str) -> str | None:
    """A text attribute, decoded without pydicom's validation (whose warnings quote values)."""
    if keyword not in ds:
        return None
    value = ds.get_item(keyword).value
    if isinstance(value, bytes):
        try:
            encodings = convert_encodings(ds.get("SpecificCharacterSet"))
        except Exception:  # an unknown character set: the default repertoire
            encodings = convert_encodings(None)
        value = decode_bytes(value, encodings, TEXT_VR_DELIMS)
    if isinstance(value, (list, tuple, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return None if value is None else str(value).strip("\x00 ")


def _one_of(keyword: str, allowed: tuple[str, ...], ds: Dataset) -> Outcome | None:
    if not allowed:
        return None
    values = _coded(ds, keyword)
    if values is None:
        return False, f"{keyword} absent (needed: one of {list(allowed)})"
    shown = "\\".join(values)
    if values[0] in allowed:
        return True, f"{keyword} {shown!r} is one of {list(allowed)}"
    return False, f"{keyword} {shown!r} is not one of {list(allowed)}"


def _modality(rule: Rule, ds: Dataset) -> Outcome | None:
    return _one_of("Modality", rule.modality, ds)


def _body_part(rule: Rule, ds: Dataset) -> Outcome | None:
    return _one_of("BodyPartExamined", rule.body_part, ds)


def _photometric(rule: Rule, ds: Dataset) -> Outcome | None:
    return _one_of("PhotometricInterpretation", rule.photometric, ds)


def _sop_class_uid(ds: Dataset) -> str | None:
    uid = ds.get("SOPClassUID")
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(uid).strip() if uid else None


def _sop_name(uid: str) -> str:
    name = UID(uid).name
    return uid if name == uid else f"{uid} ({name})"


def _sop_class(rule: Rule, ds: Dataset) -> Outcome | None:
    if not rule.sop_class:
        return None
    uid = _sop_class_uid(ds)
    allowed = [UID(u).name for u in rule.sop_class]  # the name; the UID when unknown
    if uid is None:
        return False, f"SOPClassUID absent (needed: one of {allowed})"
    verb = "is" if uid in rule.sop_class else "is not"
    return uid in rule.sop_class, f"SOPClassUID {_sop_name(uid)} {verb} one of {allowed}"


def _series_description(rule: Rule, ds: Dataset) -> Outcome | None:
    pattern = rule.series_description
    if pattern is None:
        return None
    text = _free_text(ds, "SeriesDescription")
    if not text:
        return False, f"SeriesDescription absent (needed: matching /{pattern.pattern}/)"
    if pattern.search(text):
        return True, f"SeriesDescription matches /{pattern.pattern}/"
    return False, f"SeriesDescription does not match /{pattern.pattern}/"


def _image_type(rule: Rule, ds: Dataset) -> Outcome | None:
    if not rule.image_type_include and not rule.image_type_exclude:
        return None
    values = _coded(ds, "ImageType") or []
    shown = "\\".join(values) or "absent"
    missing = [v for v in rule.image_type_include if v not in values]
    present = [v for v in rule.image_type_exclude if v in values]
    if missing:
        return False, f"ImageType {shown!r} lacks {missing}"
    if present:
        return False, f"ImageType {shown!r} has excluded {present}"
    parts = []
    if rule.image_type_include:
        parts.append(f"has {list(rule.image_type_include)}")
    if rule.image_type_exclude:
        parts.append(f"has none of {list(rule.image_type_exclude)}")
    return True, f"ImageType {shown!r} {' and '.join(parts)}"


def _numbers(ds: Dataset, keyword: str) -> list[float] | None:
    """A numeric attribute's values: top level, else in the shared functional groups."""
    value = ds.get(keyword)
    if value is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        for element in shared[0] if shared else ():
            if element.VR == "SQ" and element.value and keyword in element.value[0]:
                value = element.value[0].get(keyword)
                break
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _range_check(bounds: NumericRange, ds: Dataset) -> Outcome:
    values = _numbers(ds, bounds.keyword)
    if values is None:
        return False, f"{bounds.keyword} absent or not numeric (needed: within {bounds.text()})"
    shown = "\\".join(f"{v:g}" for v in values)
    inside = all(
        (bounds.low is None or v >= bounds.low) and (bounds.high is None or v <= bounds.high)
        for v in values
    )
    verb = "is within" if inside else "is outside"
    return inside, f"{bounds.keyword} {shown} {verb} {bounds.text()}"


_CHECKS: tuple[Callable[[Rule, Dataset], Outcome | None], ...] = (
    _modality,
    _sop_class,
    _body_part,
    _series_description,
    _image_type,
    _photometric,
)
