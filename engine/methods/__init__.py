"""Comparison methods behind one interface (engine/methods/base.py); `compare` runs them side by side."""
from __future__ import annotations

from .base import METHODS, Method, MethodContext, MethodOutput, get_method, load_method

__all__ = ["METHODS", "Method", "MethodContext", "MethodOutput", "get_method", "load_method"]
