"""Reward functions: the user's own Python code as PPO's reward (or as the gold score).

A function is named on the command line as ``module:function`` (a module on the Python path
or in the current folder) or ``path/to/file.py:function``, and is called on a batch as

    f(prompts, responses, ended, **fields) -> one number per response

``prompts`` are the prompts as the user wrote them, ``responses`` the decoded responses,
``ended`` whether each response reached end-of-text, and ``fields`` the prompt records' other
fields (e.g. GSM8K's ``answer``), each a list over the batch, as in TRL: only those the function
names as parameters, or all of them if it takes ``**kwargs``. A function of the first three
alone keeps working.

Every call is checked: an exception, a wrong number of values, or a value that is not a finite
number is a :class:`RewardFunctionError` naming the function, the prompt and what it returned,
and ``check_reward_function`` makes one such call on a made-up batch before any model loads.
With ``skip_errors`` (``--skip_bad_rewards``) an exception or a NaN/inf for one response makes
that response's score NaN instead: the trainer skips it (no gradient) and counts it, never
averaging it in.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rlhf.errors import UserError

FLOAT32_MAX = 3.4028234663852886e38
TEST_RESPONSE = "This is a short made-up answer."  # what check_reward_function asks the function to score
POSITIONAL = ("prompts", "responses", "ended")


class RewardFunctionError(UserError):
    """A reward function that cannot be loaded, or that raised or returned something unusable."""


def _expected_forms(option: str, spec: str) -> str:
    module, _, attr = spec.rpartition(".")
    guess = f" (did you mean {module}:{attr}?)" if module and attr and "/" not in spec else ""
    return (f"--{option} {spec!r}: expected module:function or path/to/file.py:function{guess}, e.g. "
            "my_rewards:length_reward (my_rewards.py in the current folder) or rewards/gsm8k.py:correct")


def load_function(spec: str, option: str = "reward_function", skip_errors: bool = False) -> "RewardFunction":
    """``module:function`` or ``path/to/file.py:function`` -> the checked function. A module in the
    current folder is importable without PYTHONPATH; ``option`` names the flag in messages;
    ``skip_errors``: see RewardFunction (``--skip_bad_rewards``)."""
    location, sep, attr = spec.strip().rpartition(":")  # the last colon: a Windows path has one too
    if not sep or not location or not attr or not attr.isidentifier():
        raise RewardFunctionError(_expected_forms(option, spec))
    if location.endswith(".py") or "/" in location or os.sep in location:
        module = _import_file(Path(location).expanduser(), option, spec)
    else:
        module = _import_module(location, attr, option, spec)
    function = getattr(module, attr, None)
    if function is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise RewardFunctionError(f"--{option} {spec!r}: {location} has no function {attr!r} "
                                  f"(its functions: {', '.join(names) or 'none'})")
    if not callable(function):
        raise RewardFunctionError(f"--{option} {spec!r}: {attr} is a {type(function).__name__}, not a function")
    return RewardFunction(function, spec, skip_errors=skip_errors)


def _import_module(name: str, attr: str, option: str, spec: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # after installed packages, so a local file never shadows one
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise RewardFunctionError(
                f"--{option} {spec!r}: no module named {e.name!r} in the current folder ({os.getcwd()}) or on the "
                f"Python path; give the file instead, e.g. path/to/{name.split('.')[-1]}.py:{attr}") from e
        raise RewardFunctionError(f"--{option} {spec!r}: importing {name} raised {_describe(e)}") from e
    except Exception as e:  # the user's module failed while importing (syntax error, its own bug)
        raise RewardFunctionError(f"--{option} {spec!r}: importing {name} raised {_describe(e)}") from e


def _import_file(path: Path, option: str, spec: str):
    if not path.is_file():
        raise RewardFunctionError(f"--{option} {spec!r}: file {str(path)!r} not found (a relative path starts "
                                  f"from the current folder, {os.getcwd()})")
    resolved = path.resolve()
    name = f"rlhf_reward_file_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    if str(resolved.parent) not in sys.path:
        sys.path.append(str(resolved.parent))  # as for a script: the file may import its neighbours
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # pickling and dataclasses look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise RewardFunctionError(f"--{option} {spec!r}: importing {path} raised {_describe(e)}") from e
    return module


def _describe(error: BaseException) -> str:
    """``ValueError: bad value (at my_rewards.py:12)``: the exception and the line that raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _short(prompt: Any) -> str:
    """A prompt (a string or a message list) shortened for a message."""
    return repr(_clip(prompt if isinstance(prompt, str) else str(prompt)))


class RewardFunction:
    """A reward function with its name, called with the fields it accepts and checked on every call.

    ``skip_errors`` (``--skip_bad_rewards``): a response on which the function raises, or for which
    it returns NaN or inf, gets NaN instead of stopping the run; the trainer gives that sample no
    gradient and counts it (``objective/skipped_rewards``). ``skipped`` counts them over the run, and
    the first is reported in a warning. A wrong number or type of values still stops the run: that
    is a bug in the function, not a bad sample."""

    def __init__(self, function: Callable, name: str | None = None, skip_errors: bool = False):
        self.function = function
        self.name = name or f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', function)}"
        self.skip_errors, self.skipped, self.first_skip = skip_errors, 0, ""
        self.takes_all_fields, self.field_names, self.required_fields = False, set(), set()
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # a builtin or C function: give it the three arguments only
            return
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:3]
        for p in params:
            if p.kind == p.VAR_KEYWORD:
                self.takes_all_fields = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p not in positional:
                self.field_names.add(p.name)
                if p.default is p.empty:
                    self.required_fields.add(p.name)
        try:  # the three batch arguments by position, the record fields it names by keyword
            signature.bind(None, None, None, **dict.fromkeys(self.required_fields))
        except TypeError as e:
            raise RewardFunctionError(f"reward function {self.name} cannot be called as f(prompts, responses, ended) "
                                      f"({e}); its signature is {signature}") from e

    def keyword_arguments(self, fields: Sequence[Mapping] | None) -> dict[str, list]:
        """The records' fields this function accepts, each as a list over the batch (None where absent)."""
        if not fields:
            return {}
        names = sorted({name for record in fields for name in record})
        if not self.takes_all_fields:
            names = [n for n in names if n in self.field_names]
        return {name: [record.get(name) for record in fields] for name in names}

    def __call__(self, prompts: Sequence, responses: Sequence[str], ended: Sequence[bool],
                 fields: Sequence[Mapping] | None = None) -> list[float]:
        """One finite float per response, or a RewardFunctionError saying what went wrong."""
        kwargs = self.keyword_arguments(fields)
        try:
            values = self.function(list(prompts), list(responses), list(ended), **kwargs)
        except Exception as e:
            if self.skip_errors:
                return self._one_by_one(prompts, responses, ended, fields)
            index = self._culprit(prompts, responses, ended, fields)
            prompt = f"the prompt {_short(prompts[index])}" if index is not None else f"a batch of {len(prompts)}"
            raise RewardFunctionError(f"reward function {self.name} raised {_describe(e)} on {prompt}") from e
        return self._checked(values, prompts)

    def _one_by_one(self, prompts, responses, ended, fields) -> list[float]:
        """With skip_errors, after the batch raised: each response alone, NaN for those that raise."""
        values = []
        for i in range(len(prompts)):
            try:
                value = self.function([prompts[i]], [responses[i]], [ended[i]],
                                      **self.keyword_arguments([fields[i]] if fields else None))
            except Exception as e:
                values.append(self._skip(f"raised {_describe(e)} on the prompt {_short(prompts[i])}"))
                continue
            values.extend(self._checked(value, [prompts[i]]))
        return values

    def _skip(self, what: str) -> float:
        """Count a skipped response (NaN marks it for the trainer); warn about the first one."""
        self.skipped += 1
        if not self.first_skip:
            self.first_skip = what
            warnings.warn(f"reward function {self.name} {what}: skipped by --skip_bad_rewards (that sample gets no "
                          "gradient; the count is logged as objective/skipped_rewards)", stacklevel=3)
        return math.nan

    def _culprit(self, prompts, responses, ended, fields) -> int | None:
        """The first response the function fails on alone, to name its prompt in the error."""
        for i in range(len(prompts)):
            try:
                self.function([prompts[i]], [responses[i]], [ended[i]],
                              **self.keyword_arguments([fields[i]] if fields else None))
            except Exception:
                return i
        return None

    def _checked(self, values: Any, prompts: Sequence) -> list[float]:
        if hasattr(values, "tolist"):  # a tensor or an array
            values = values.tolist()
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise RewardFunctionError(f"reward function {self.name} returned {_clip(repr(values))} (a "
                                      f"{type(values).__name__}) for {len(prompts)} responses: return a list with "
                                      "one number per response")
        if len(values) != len(prompts):
            raise RewardFunctionError(f"reward function {self.name} returned {len(values)} values for {len(prompts)} "
                                      f"responses (first prompt {_short(prompts[0]) if prompts else ''}): return "
                                      "one number per response, in order")
        checked = []
        for value, prompt in zip(values, prompts):
            if not isinstance(value, numbers.Real):
                raise RewardFunctionError(f"reward function {self.name} returned {_clip(repr(value))} (a "
                                          f"{type(value).__name__}) for the prompt {_short(prompt)}: each score must "
                                          "be a number (int or float)")
            if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                if self.skip_errors:
                    checked.append(self._skip(f"returned {value} for the prompt {_short(prompt)}"))
                    continue
                raise RewardFunctionError(f"reward function {self.name} returned {value} for the prompt "
                                          f"{_short(prompt)}: each score must be a finite number (or set "
                                          "--skip_bad_rewards to skip such samples)")
            checked.append(float(value))
        return checked


def check_reward_function(function: RewardFunction, prompts: Sequence, fields: Sequence[Mapping],
                          prompts_file: str = "the prompts file") -> None:
    """Call ``function`` on the first two prompts with a made-up response each, so that a wrong
    spec, a missing field or a bad return value shows in seconds, before any model loads."""
    prompts, fields = list(prompts[:2]), [dict(f) for f in fields[:2]]
    present = {name for record in fields for name in record}
    missing = sorted(function.required_fields - present)
    if missing:
        raise RewardFunctionError(f"reward function {function.name} needs the field(s) {', '.join(missing)}, which "
                                  f"the records of {prompts_file} do not have (they have: "
                                  f"{', '.join(sorted(present)) or 'no fields besides the prompt'})")
    try:
        function(prompts, [TEST_RESPONSE] * len(prompts), [True] * len(prompts), fields)
    except RewardFunctionError as e:
        raise RewardFunctionError(f"{e} (start-up check: the first prompts of {prompts_file}, each with the "
                                  f"made-up response {TEST_RESPONSE!r})") from e
