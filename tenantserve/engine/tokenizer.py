"""A checkpoint's tokenizer (`tokenizer.json`) and its own chat template, without transformers.

Chat templates are rendered the way Hugging Face renders them (`apply_chat_template`):
a sandboxed, immutable jinja2 environment with `trim_blocks` and `lstrip_blocks`, the
variables `messages`, `add_generation_prompt` and the special tokens (`bos_token`,
`eos_token`, ...), and the helpers `raise_exception`, `tojson` and `strftime_now`. The
rendered text is encoded without adding special tokens, so the ids equal transformers'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from tenantserve.errors import CheckpointError, InvalidRequestError

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class Tokenizer:
    """Text <-> token ids and chat rendering for one checkpoint directory."""

    def __init__(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{model_dir} has no tokenizer.json")
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception on malformed files
            raise CheckpointError(f"{path}: cannot load tokenizer ({e})") from e
        tok_config = _read_json(model_dir / "tokenizer_config.json")
        model_config = _read_json(model_dir / "config.json")
        gen_config = _read_json(model_dir / "generation_config.json")

        # Special tokens as text, for the template (`{{ bos_token }}`).
        self.special_tokens: dict[str, str] = {}
        for key in _SPECIAL_TOKEN_KEYS:
            if (text := _token_text(tok_config.get(key))) is not None:
                self.special_tokens[key] = text

        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
        bos_text = self.special_tokens.get("bos_token")
        bos_id = self._tok.token_to_id(bos_text) if bos_text is not None else None
        self.bos_token_id: int | None = bos_id if bos_id is not None else _first_id(model_config)
        self.eos_token_ids: frozenset[int] = self._collect_eos_ids(
            gen_config, model_config, self.special_tokens.get("eos_token")
        )
        self.chat_template: str | None = _load_chat_template(model_dir, tok_config)
        self._template: jinja2.Template | None = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in the text are recognised."""
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of the token ids."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def render_chat(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The conversation as the chat template writes it; InvalidRequestError if malformed."""
        _validate_messages(messages)
        template = self._compiled_template()
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            return template.render(
                messages=plain,
                add_generation_prompt=add_generation_prompt,
                tools=None,
                documents=None,
                **self.special_tokens,
            )
        except jinja2.TemplateError as e:
            raise InvalidRequestError(
                f"the model's chat template rejected the messages: {e}"
            ) from e

    def encode_chat(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of the rendered chat (as `apply_chat_template(tokenize=True)` gives)."""
        return self.encode(self.render_chat(messages, add_generation_prompt))

    def token_id(self, token: str) -> int | None:
        """The id of a single vocabulary token, or None."""
        return self._tok.token_to_id(token)

    def _compiled_template(self) -> jinja2.Template:
        if self._template is None:
            if self.chat_template is None:
                raise InvalidRequestError(
                    "this model has no chat template; use /v1/completions with a plain prompt"
                )
            try:
                self._template = _chat_environment().from_string(self.chat_template)
            except jinja2.TemplateSyntaxError as e:
                raise CheckpointError(f"the model's chat template does not parse: {e}") from e
        return self._template

    def _collect_eos_ids(
        self,
        gen_config: Mapping[str, Any],
        model_config: Mapping[str, Any],
        eos_text: str | None,
    ) -> frozenset[int]:
        ids: set[int] = set()
        for config in (gen_config, model_config):
            value = config.get("eos_token_id")
            for i in value if isinstance(value, list) else [value]:
                if isinstance(i, int):
                    ids.add(i)
        if eos_text is not None and (i := self._tok.token_to_id(eos_text)) is not None:
            ids.add(i)
        return frozenset(ids)


def _validate_messages(messages: object) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidRequestError(f"messages[{i}] must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in CHAT_ROLES:
            raise InvalidRequestError(
                f"messages[{i}].role must be one of {', '.join(sorted(CHAT_ROLES))}, got {role!r}"
            )
        if not isinstance(content, str):
            raise InvalidRequestError(f"messages[{i}].content must be a string")


def _chat_environment() -> ImmutableSandboxedEnvironment:
    """The jinja2 environment Hugging Face renders chat templates in."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters, which templates do not expect.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from e
    return data if isinstance(data, dict) else {}


def _token_text(value: object) -> str | None:
    """A special token as written in tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _first_id(config: Mapping[str, Any]) -> int | None:
    value = config.get("bos_token_id")
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None


def _load_chat_template(model_dir: Path, tok_config: Mapping[str, Any]) -> str | None:
    """chat_template.jinja, else chat_template.json, else tokenizer_config.json's entry."""
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text()
    value = _read_json(model_dir / "chat_template.json").get("chat_template")
    if value is None:
        value = tok_config.get("chat_template")
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        value = named.get("default")
    return value if isinstance(value, str) else None
