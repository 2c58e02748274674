"""Clinical identifiers and codes as column types: the shape of each, its check digit where it has
one, and the one form it is stored in. Check digits by python-stdnum (Luhn, Verhoeff, the US SSN
rules); phone numbers by Google's libphonenumber (``phonenumbers``).

* ``npi`` (10 digits): a US National Provider Identifier, Luhn check digit over ``80840`` + the
  first 9 digits.
* ``icd10cm`` (``E11.9``: upper case, dot after the category): an ICD-10-CM code, with or without
  the dot.
* ``loinc`` (``2345-7``): 1-7 digits, ``-``, the mod-10 (Luhn) check digit.
* ``snomed`` (digits): a SNOMED CT identifier, 6-18 digits, Verhoeff check digit, a known partition.
* ``us_zip`` (``02139`` or ``02139-4307``): a US ZIP or ZIP+4 code.
* ``us_ssn`` (``123-45-6789``): a US SSN, never-issued areas, groups and serials refused
  (identifying unless declared otherwise).
* ``mrn`` (as written): a medical record number in the column's declared ``pattern``
  (identifying unless declared otherwise).
* ``e164_phone`` (``+14155552671``): an international number with its ``+`` country code, valid
  for that country.

A value that cannot be read as its type is kept as received and the type's check quarantines
the row, like any other type.
"""

from __future__ import annotations

import re
from collections.abc import Callable

CODE_TYPES = ("npi", "icd10cm", "loinc", "snomed", "us_zip", "us_ssn", "mrn", "e164_phone")
#: types whose values identify a person: such a column is identifying unless declared otherwise
IDENTIFYING_TYPES = frozenset({"us_ssn", "mrn"})

_SEPARATORS = re.compile(r"[\s-]")
_ICD10CM = re.compile(r"([A-Z][0-9][0-9A-Z])\.?([0-9A-Z]{1,4})?")
_LOINC = re.compile(r"([0-9]{1,7})-([0-9])")
_ZIP = re.compile(r"([0-9]{5})(?:-?([0-9]{4}))?")
#: the partition identifiers of SNOMED CT ids (short and long format: concept, description,
#: relationship)
_SNOMED_PARTITIONS = frozenset({"00", "01", "02", "10", "11", "12"})


def _digits(value: str) -> str:
    return _SEPARATORS.sub("", value)


def canonical_npi(value: str) -> str | None:
    from stdnum import luhn

    digits = _digits(value)
    if len(digits) != 10 or not digits.isdigit() or not luhn.is_valid("80840" + digits):
        return None
    return digits


def canonical_icd10cm(value: str) -> str | None:
    match = _ICD10CM.fullmatch(value.strip().upper())
    if match is None:
        return None
    category, detail = match.groups()
    return f"{category}.{detail}" if detail else category


def canonical_loinc(value: str) -> str | None:
    from stdnum import luhn

    match = _LOINC.fullmatch(value.strip())
    if match is None or not luhn.is_valid(match.group(1) + match.group(2)):
        return None
    return f"{int(match.group(1))}-{match.group(2)}"


def canonical_snomed(value: str) -> str | None:
    from stdnum import verhoeff

    digits = value.strip()
    if not (6 <= len(digits) <= 18 and digits.isdigit() and digits[0] != "0"):
        return None
    if digits[-3:-1] not in _SNOMED_PARTITIONS or not verhoeff.is_valid(digits):
        return None
    return digits


def canonical_us_zip(value: str) -> str | None:
    match = _ZIP.fullmatch(value.strip())
    if match is None:
        return None
    five, four = match.groups()
    return f"{five}-{four}" if four else five


def canonical_us_ssn(value: str) -> str | None:
    from stdnum.us import ssn

    digits = _digits(value)
    if len(digits) != 9 or not digits.isdigit() or not ssn.is_valid(digits):
        return None
    return str(ssn.format(digits))


def canonical_e164_phone(value: str) -> str | None:
    import phonenumbers

    text = value.strip()
    if not text.startswith("+"):
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) or number.extension:
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _as_written(value: str) -> str | None:
    return value.strip() or None


#: type -> the stored form of a valid value, or None
CANONICAL: dict[str, Callable[[str], str | None]] = {
    "npi": canonical_npi,
    "icd10cm": canonical_icd10cm,
    "loinc": canonical_loinc,
    "snomed": canonical_snomed,
    "us_zip": canonical_us_zip,
    "us_ssn": canonical_us_ssn,
    "mrn": _as_written,
    "e164_phone": canonical_e164_phone,
}

#: type -> (rule name, the reason's template)
RULES: dict[str, tuple[str, str]] = {
    "npi": ("npi", "{column}{value} is not a valid NPI (10 digits with a Luhn check digit)"),
    "icd10cm": (
        "icd10cm",
        "{column}{value} is not an ICD-10-CM code (letter, 2 characters, optional .detail)",
    ),
    "loinc": ("loinc", "{column}{value} is not a LOINC code with a valid check digit (e.g. 2345-7)"),
    "snomed": (
        "snomed",
        "{column}{value} is not a SNOMED CT identifier (Verhoeff check digit, known partition)",
    ),
    "us_zip": ("us_zip", "{column}{value} is not a US ZIP code (12345 or 12345-6789)"),
    "us_ssn": ("us_ssn", "{column} is not a US SSN that can have been issued"),
    "e164_phone": ("e164_phone", "{column}{value} is not an international phone number (+ and country code)"),
}
