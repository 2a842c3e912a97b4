"""Secure scoring (安全评分): an institution's encrypted model applied to zone features."""
