"""Validation rules shared by models and forms, so each rule is written once."""

from django.core.exceptions import ValidationError

from . import limits


def validate_side(value: int) -> None:
    if value % limits.SIDE_MULTIPLE:
        raise ValidationError(f"Must be a multiple of {limits.SIDE_MULTIPLE} (got {value}).", code="side_multiple")


def validate_strength(value) -> None:
    if not limits.MIN_STRENGTH <= float(value) <= limits.MAX_STRENGTH:
        raise ValidationError(
            f"Must be between {limits.MIN_STRENGTH:g} and {limits.MAX_STRENGTH:g} (got {value}).", code="strength_range"
        )


def validate_hires_scale(value) -> None:
    if float(value) != limits.HIRES_OFF and not limits.MIN_HIRES_SCALE <= float(value) <= limits.MAX_HIRES_SCALE:
        raise ValidationError(
            f"Must be {limits.HIRES_OFF:g} (off) or between {limits.MIN_HIRES_SCALE:g} and "
            f"{limits.MAX_HIRES_SCALE:g} (got {value}).",
            code="hires_scale_range",
        )
