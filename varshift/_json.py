"""Conversion of results to plain JSON types, and bounded parsing of untrusted JSON."""

import json

import numpy as np

#: JSON nested deeper than this is refused before anything walks it recursively. A Keras
#: config nests about 3 levels per nested model and 10 inside a layer (so 200 allows 60
#: nested models); a varshift model's metadata 3 per nested container.
MAX_JSON_DEPTH = 200


def json_ready(value):
    """``value`` with NumPy scalars and arrays as Python numbers and lists, dict keys as
    strings, and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def loads(text, what: str):
    """Parse the JSON ``text`` (str or UTF-8 bytes) that ``what`` names, or raise a
    ValueError that names it: invalid JSON, integers beyond Python's digit limit, and
    nesting deeper than ``MAX_JSON_DEPTH`` are all refused."""
    too_deep = f"{what} is nested more than {MAX_JSON_DEPTH} levels deep (the limit)"
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(too_deep) from None
    except (ValueError, MemoryError) as err:  # also JSONDecodeError, UnicodeDecodeError
        reason = str(err) if len(str(err)) <= 200 else str(err)[:197] + "..."
        raise ValueError(f"{what} is not valid JSON ({type(err).__name__}: {reason})") from err
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(too_deep)
    return value


def _depth(value) -> int:
    """Nesting depth of lists and dicts in ``value``, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                      else item))
    return deepest
