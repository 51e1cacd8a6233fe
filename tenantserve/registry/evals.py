"""Eval sets and their results, the domain: golden prompts with a scoring rule each, run
with greedy decoding against one model version (or one adapter version); the score is the
share of items passed.

Plain dataclasses and pure functions; no SQLAlchemy, no web framework. Persistence lives in
`eval_tables.py` / `eval_repository.py`, running in `eval_runner.py`, the use cases and the
regression gate in `eval_service.py` / `eval_gate.py`.

An eval set as JSON (what `tenantserve eval set upload FILE` and the APIs take):

    {"name": "smollm2-golden", "description": "...", "min_score": 0.75,
     "items": [
       {"id": "capital-fr", "prompt": "What is the capital of France?",
        "rule": {"type": "contains", "any": ["Paris"]}, "max_tokens": 24},
       {"id": "mc", "messages": [{"role": "user", "content": "..."}],
        "rule": {"type": "choice", "answer": "B", "letters": "ABCD"}}]}

Rules (every comparison on the generated text only):

    exact     the answer equals `value` once both are trimmed, case-folded and stripped of
              trailing `.`/`!` (a model's "Yes." is the answer "yes")
    contains  the answer contains any of `any` (case-insensitive)
    regex     `pattern` (Python syntax) is found anywhere in the answer (`search`)
    choice    the letter the answer opens with (after an optional "Answer:" / "(", and
              followed by `.`, `)`, `:` or nothing) is `answer`, one of `letters` (default
              ABCD); "B. Paris", "(B)" and "The answer is B" choose B, "A week" chooses none
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from tenantserve.errors import InvalidRequestError
from tenantserve.tenancy.model import random_id_part

EVAL_SET_ID_PREFIX = "evs_"
EVAL_RESULT_ID_PREFIX = "evr_"
MAX_EVAL_SET_BYTES = 1 << 20
MAX_ITEMS = 200
MAX_PROMPT_CHARS = 8_000
MAX_MESSAGES = 16
MAX_ITEM_MAX_TOKENS = 512
DEFAULT_ITEM_MAX_TOKENS = 32
MAX_RULE_STRINGS = 16
MAX_RULE_CHARS = 500
# An answer is kept in the outcome up to this many characters.
MAX_KEPT_OUTPUT_CHARS = 500
_SET_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}")
_ITEM_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}")
_ROLES = ("system", "user", "assistant")
_CHOICE_RE = re.compile(
    r"^[\s*\"']*(?i:(?:the\s+)?(?:correct\s+)?answer(?:\s+is)?\s*[:\-]?\s*)?"
    r"\(?([A-Z])(?:[.):]|\s*$)"
)


class RuleKind(StrEnum):
    EXACT = "exact"
    CONTAINS = "contains"
    REGEX = "regex"
    CHOICE = "choice"


@dataclass(frozen=True)
class Rule:
    """How one answer is scored: the kind and its strings (exact: the value; contains: the
    alternatives; regex: the pattern; choice: the letter, then the allowed letters)."""

    kind: RuleKind
    values: tuple[str, ...]

    @classmethod
    def from_json(cls, raw: object, where: str) -> Rule:
        """The rule of `raw` (`{"type": ..., ...}`); InvalidRequestError naming `where`."""
        if not isinstance(raw, Mapping):
            raise InvalidRequestError(f"{where}: rule must be an object with a `type`")
        kinds = ", ".join(k.value for k in RuleKind)
        try:
            kind = RuleKind(str(raw.get("type")))
        except ValueError:
            raise InvalidRequestError(
                f"{where}: rule type must be one of {kinds}, not {raw.get('type')!r}"
            ) from None
        expected = {
            RuleKind.EXACT: {"value"},
            RuleKind.CONTAINS: {"any"},
            RuleKind.REGEX: {"pattern"},
            RuleKind.CHOICE: {"answer", "letters"},
        }[kind]
        extra = set(raw) - expected - {"type"}
        if extra:
            raise InvalidRequestError(f"{where}: unknown rule field(s) {sorted(extra)}")
        if kind is RuleKind.CONTAINS:
            options = raw.get("any")
            if isinstance(options, str):
                options = [options]
            if not isinstance(options, list) or not 1 <= len(options) <= MAX_RULE_STRINGS:
                raise InvalidRequestError(
                    f"{where}: `any` must list 1 to {MAX_RULE_STRINGS} strings"
                )
            return cls(kind, tuple(_rule_string(o, where) for o in options))
        if kind is RuleKind.CHOICE:
            letters = _rule_string(raw.get("letters", "ABCD"), where)
            answer = _rule_string(raw.get("answer"), where)
            if not re.fullmatch(r"[A-Z]{2,26}", letters) or len(set(letters)) != len(letters):
                raise InvalidRequestError(f"{where}: `letters` must be 2+ distinct A-Z letters")
            if len(answer) != 1 or answer not in letters:
                raise InvalidRequestError(f"{where}: `answer` must be one of {letters!r}")
            return cls(kind, (answer, letters))
        value = _rule_string(raw.get("value" if kind is RuleKind.EXACT else "pattern"), where)
        if kind is RuleKind.REGEX:
            try:
                re.compile(value)
            except re.error as e:
                raise InvalidRequestError(f"{where}: invalid regex {value!r}: {e}") from None
        return cls(kind, (value,))

    def to_json(self) -> dict[str, Any]:
        if self.kind is RuleKind.CONTAINS:
            return {"type": self.kind.value, "any": list(self.values)}
        if self.kind is RuleKind.CHOICE:
            return {"type": self.kind.value, "answer": self.values[0], "letters": self.values[1]}
        key = "value" if self.kind is RuleKind.EXACT else "pattern"
        return {"type": self.kind.value, key: self.values[0]}

    def passes(self, answer: str) -> bool:
        """Whether `answer` (the generated text) satisfies the rule."""
        if self.kind is RuleKind.EXACT:
            return _normalize(answer) == _normalize(self.values[0])
        if self.kind is RuleKind.CONTAINS:
            folded = answer.casefold()
            return any(v.casefold() in folded for v in self.values)
        if self.kind is RuleKind.REGEX:
            return re.search(self.values[0], answer) is not None
        return chosen_letter(answer, self.values[1]) == self.values[0]


def chosen_letter(answer: str, letters: str = "ABCD") -> str | None:
    """The option letter `answer` opens with ("B", "B. Paris", "(C)", "Answer: D"), if it is
    one of `letters`; None otherwise."""
    m = _CHOICE_RE.match(answer)
    if m is None or m.group(1) not in letters:
        return None
    return m.group(1)


@dataclass(frozen=True)
class EvalItem:
    """One golden prompt: chat messages (a text prompt is one user message), its rule, and
    how many tokens the answer may have."""

    id: str
    messages: tuple[tuple[str, str], ...]
    rule: Rule
    max_tokens: int = DEFAULT_ITEM_MAX_TOKENS

    @property
    def chat(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them."""
        return [{"role": role, "content": content} for role, content in self.messages]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": self.chat,
            "rule": self.rule.to_json(),
            "max_tokens": self.max_tokens,
        }


@dataclass(frozen=True)
class EvalSet:
    """A named golden set; `min_score` is its absolute floor (None: none)."""

    name: str
    items: tuple[EvalItem, ...]
    description: str = ""
    min_score: float | None = None

    @classmethod
    def from_json(cls, raw: object) -> EvalSet:
        """Validate an uploaded set (size caps, item ids unique, every rule checked);
        InvalidRequestError naming the first problem."""
        if not isinstance(raw, Mapping):
            raise InvalidRequestError("an eval set is a JSON object with `name` and `items`")
        extra = set(raw) - {"name", "description", "min_score", "items"}
        if extra:
            raise InvalidRequestError(f"eval set: unknown field(s) {sorted(extra)}")
        size = len(json.dumps(raw, default=str))
        if size > MAX_EVAL_SET_BYTES:
            raise InvalidRequestError(
                f"eval set is {size} bytes; the limit is {MAX_EVAL_SET_BYTES}"
            )
        name = validate_set_name(raw.get("name"))
        description = raw.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_PROMPT_CHARS:
            raise InvalidRequestError("eval set: `description` must be a short string")
        min_score = parse_score(raw.get("min_score"), "min_score")
        items = raw.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise InvalidRequestError(f"eval set {name}: `items` must list 1 to {MAX_ITEMS} items")
        parsed = tuple(_item(it, i) for i, it in enumerate(items))
        ids = [it.id for it in parsed]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InvalidRequestError(f"eval set {name}: duplicate item ids {dupes}")
        return cls(name, parsed, description, min_score)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "min_score": self.min_score,
            "items": [it.to_json() for it in self.items],
        }

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the canonical JSON: results of another digest scored a
        different set and are never compared with this one's."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredEvalSet:
    """An eval set attached to a target: `model` (every version), `model@version`, or a
    tenant's adapter key `adapter:<tenant>/<name>` (private to `tenant_id`)."""

    id: str
    target: str
    eval_set: EvalSet
    created_at: datetime
    tenant_id: str | None = None

    @property
    def digest(self) -> str:
        return self.eval_set.digest


@dataclass(frozen=True)
class ItemOutcome:
    """One item's answer (cut to `MAX_KEPT_OUTPUT_CHARS`), verdict, and error if it failed
    to generate."""

    item_id: str
    passed: bool
    output: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "passed": self.passed,
            "output": self.output,
            "error": self.error,
        }


@dataclass(frozen=True)
class EvalResult:
    """One run of one set against one version ref (`name@version` or an adapter ref)."""

    id: str
    ref: str
    set_name: str
    set_digest: str
    outcomes: tuple[ItemOutcome, ...]
    at: datetime
    tenant_id: str | None = None

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def score(self) -> float:
        """passed / total (0 for an empty run)."""
        return self.passed / self.total if self.total else 0.0

    def summary(self) -> str:
        return f"{self.set_name}: {self.passed}/{self.total} passed (score {self.score:.2f})"


def score_item(item: EvalItem, answer: str | None, error: str | None = None) -> ItemOutcome:
    """The outcome of `item` given its generated `answer` (None with `error`: it failed)."""
    if answer is None:
        return ItemOutcome(item.id, False, "", error or "no answer")
    return ItemOutcome(item.id, item.rule.passes(answer), answer[:MAX_KEPT_OUTPUT_CHARS])


def new_eval_set_id() -> str:
    return EVAL_SET_ID_PREFIX + random_id_part()


def new_eval_result_id() -> str:
    return EVAL_RESULT_ID_PREFIX + random_id_part()


def validate_set_name(name: object) -> str:
    """`name` when it matches `[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}`; InvalidRequestError else."""
    if not isinstance(name, str) or not _SET_NAME_RE.fullmatch(name):
        raise InvalidRequestError(
            f"eval set name must match [a-zA-Z0-9][a-zA-Z0-9._-]* (≤ 64 chars), not {name!r}"
        )
    return name


def parse_score(value: object, what: str) -> float | None:
    """A score threshold in [0, 1], or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidRequestError(f"{what} must be a number between 0 and 1, not {value!r}")
    return float(value)


def _item(raw: object, index: int) -> EvalItem:
    where = f"item {index}"
    if not isinstance(raw, Mapping):
        raise InvalidRequestError(f"{where}: must be an object")
    extra = set(raw) - {"id", "prompt", "messages", "rule", "max_tokens"}
    if extra:
        raise InvalidRequestError(f"{where}: unknown field(s) {sorted(extra)}")
    item_id = raw.get("id", str(index + 1))
    if not isinstance(item_id, str) or not _ITEM_ID_RE.fullmatch(item_id):
        raise InvalidRequestError(f"{where}: id must match [a-zA-Z0-9][a-zA-Z0-9._-]*")
    where = f"item {item_id!r}"
    if ("prompt" in raw) == ("messages" in raw):
        raise InvalidRequestError(f"{where}: give exactly one of `prompt` or `messages`")
    messages = _messages(raw["messages"], where) if "messages" in raw else None
    if messages is None:
        prompt = raw["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequestError(f"{where}: `prompt` must be non-empty text")
        messages = (("user", prompt),)
    if sum(len(c) for _, c in messages) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(f"{where}: the prompt is over {MAX_PROMPT_CHARS} characters")
    max_tokens = raw.get("max_tokens", DEFAULT_ITEM_MAX_TOKENS)
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_ITEM_MAX_TOKENS
    ):
        raise InvalidRequestError(f"{where}: max_tokens must be 1 to {MAX_ITEM_MAX_TOKENS}")
    return EvalItem(item_id, messages, Rule.from_json(raw.get("rule"), where), max_tokens)


def _messages(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not 1 <= len(raw) <= MAX_MESSAGES:
        raise InvalidRequestError(f"{where}: `messages` must list 1 to {MAX_MESSAGES} messages")
    out = []
    for m in raw:
        if (
            not isinstance(m, Mapping)
            or m.get("role") not in _ROLES
            or not isinstance(m.get("content"), str)
        ):
            raise InvalidRequestError(
                f"{where}: each message is {{'role': system|user|assistant, 'content': text}}"
            )
        out.append((str(m["role"]), str(m["content"])))
    if out[-1][0] != "user":
        raise InvalidRequestError(f"{where}: the last message must be the user's")
    return tuple(out)


def _rule_string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_RULE_CHARS:
        raise InvalidRequestError(
            f"{where}: rule strings must be non-empty text of at most {MAX_RULE_CHARS} chars"
        )
    return value


def _normalize(text: str) -> str:
    return text.strip().rstrip(".!").strip().casefold()


def outcomes_json(outcomes: Sequence[ItemOutcome]) -> list[dict[str, Any]]:
    return [o.to_json() for o in outcomes]


def outcomes_from_json(raw: Sequence[Mapping[str, Any]]) -> tuple[ItemOutcome, ...]:
    return tuple(ItemOutcome(o["id"], bool(o["passed"]), o["output"], o.get("error")) for o in raw)
