"""A checkpoint's chat template, rendered in Jinja's immutable sandbox with limits.

A chat template is code from the checkpoint. The sandbox already keeps it from reaching Python
objects; these limits keep it from hanging or filling memory (nested ``range(100000)`` loops,
``"x" * 10**9``): at most RANGE_BUDGET numbers from all its ``range`` calls together, operands of
``*`` and ``**`` that cannot build a result over OUTPUT_LIMIT characters, at most OUTPUT_LIMIT
characters of output, and TIME_LIMIT seconds of wall-clock time (checked on every call, attribute
and item lookup the template makes, and by a SIGALRM timer where one can be set). Any breach, like a
syntax error or the template's own raise_exception, is one SourceError line.
"""

from __future__ import annotations

import json
import operator
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..basics.errors import SourceError

TIME_LIMIT = 5.0  # seconds; real templates take milliseconds
RANGE_BUDGET = 1_000_000  # numbers from all range() calls of one rendering
OUTPUT_LIMIT = 1 << 20  # characters, plus 8 per character of the messages


class TemplateLimit(Exception):
    """The template went past one of the limits (the message says which)."""


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: cannot read it as JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def token_text(value: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content", "") if isinstance(value, dict) else (value or "")


def chat_template(checkpoint: Path) -> str:
    """The checkpoint's chat template text."""
    template = read_json(checkpoint / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not template and (checkpoint / "chat_template.jinja").is_file():
        try:
            template = (checkpoint / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise SourceError(f"{checkpoint / 'chat_template.jinja'}: cannot read it ({err})") from None
    if not isinstance(template, str) or not template:
        raise SourceError(f"{checkpoint}: --chat needs a chat template, and the checkpoint has none")
    return template


def _limited_environment(deadline: float, output_limit: int) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    budget = [RANGE_BUDGET]

    def check_time() -> None:
        if time.monotonic() > deadline:
            raise TemplateLimit(f"took longer than {TIME_LIMIT:g} s")

    def limited_range(*args: int) -> range:
        numbers = range(*args)
        budget[0] -= len(numbers)
        if budget[0] < 0:
            raise TemplateLimit(f"its range() calls asked for more than {RANGE_BUDGET} numbers")
        return numbers

    def limited_product(op: Any, left: Any, right: Any) -> Any:
        sizes = [len(x) for x in (left, right) if isinstance(x, (str, list, tuple))]
        counts = [x for x in (left, right) if isinstance(x, int)]
        if sizes and counts and sizes[0] * max(counts[0], 0) > output_limit:
            raise TemplateLimit(f"a repetition would build more than {output_limit} items")
        if op is operator.pow and isinstance(right, (int, float)) and abs(right) > 1000:
            raise TemplateLimit(f"an exponent of {right!r:.20} is too large")
        return op(left, right)

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            check_time()
            return super().call(__context, __obj, *args, **kwargs)

        def getattr(self, obj: Any, attribute: str) -> Any:
            check_time()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            check_time()
            return super().getitem(obj, argument)

        def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
            check_time()
            op = operator.mul if operator_name == "*" else operator.pow
            return limited_product(op, left, right)

    env = Limited(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["range"] = limited_range
    return env, check_time


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise TemplateLimit after ``seconds`` in the main thread (POSIX), else do nothing."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TemplateLimit(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def render_template(template: str, where: Any, **variables: Any) -> str:
    """``template`` rendered with ``variables`` inside the limits; errors name ``where``."""
    import jinja2

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    text_size = sum(len(json.dumps(v, default=str)) for v in variables.values())
    limit = OUTPUT_LIMIT + 8 * text_size
    env, check_time = _limited_environment(time.monotonic() + TIME_LIMIT, limit)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: time.strftime(fmt))
    parts, size = [], 0
    try:
        with _alarm(TIME_LIMIT + 0.5):  # a little after the deadline the hooks check
            for part in env.from_string(template).generate(**variables):
                size += len(part)
                if size > limit:
                    raise TemplateLimit(f"wrote more than {limit} characters")
                check_time()
                parts.append(part)
    except TemplateLimit as err:
        raise SourceError(f"{where}: the chat template was stopped: it {err}") from None
    except jinja2.TemplateError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SourceError(f"{where}: the chat template failed: {type(err).__name__}: {first:.200}") from None
    except (RecursionError, MemoryError, ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as err:
        raise SourceError(f"{where}: the chat template failed: {type(err).__name__}: {str(err):.200}") from None
    return "".join(parts)


def render_chat(checkpoint: Path, prompt: str) -> str:
    """One user turn plus the assistant's opening, through the checkpoint's chat template."""
    config = read_json(checkpoint / "tokenizer_config.json")
    return render_template(
        chat_template(checkpoint), checkpoint,
        messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
        bos_token=token_text(config.get("bos_token")), eos_token=token_text(config.get("eos_token")),
    )
