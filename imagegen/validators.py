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
