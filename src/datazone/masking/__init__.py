"""Desensitization of product answers (pure: no database)."""

from datazone.masking.service import FieldRule, MaskedAnswer, mask_answer

__all__ = ["FieldRule", "MaskedAnswer", "mask_answer"]
