"""Our tokenizer renders and encodes chats exactly as transformers does for the same checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import InvalidRequestError

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
    ],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "Now count to three:\n  un, deux…"},
    ],
    [
        {"role": "user", "content": "  leading spaces, émojis 🎉 and 中文  "},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "code:\n```py\nprint('x')\n```"},
    ],
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Tokenizer:
    return Tokenizer(smollm2_dir)


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_token_ids_equal_transformers(
    tokenizer: Tokenizer,
    hf_tokenizer: Any,
    messages: list[dict[str, str]],
    add_generation_prompt: bool,
) -> None:
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt
    )["input_ids"]
    assert tokenizer.encode_chat(messages, add_generation_prompt) == expected
    assert tokenizer.render_chat(messages, add_generation_prompt) == (
        hf_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    )


def test_chat_ends_with_the_assistant_header(tokenizer: Tokenizer) -> None:
    text = tokenizer.render_chat([{"role": "user", "content": "hi"}])
    assert text.endswith("<|im_start|>assistant\n")


def test_plain_encoding_equals_transformers(tokenizer: Tokenizer, hf_tokenizer: Any) -> None:
    text = "The quick brown fox <|im_end|> jumps\n\tover 13 lazy dogs. ünïcødé"
    assert tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)


def test_decode_round_trips_text(tokenizer: Tokenizer) -> None:
    text = "Hello, world! Ça va? 🎉 x = [1, 2, 3]\n  indented"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_decode_drops_special_tokens_unless_asked(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert tokenizer.decode(ids) == "assistant\nHi"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>assistant\nHi<|im_end|>"


def test_eos_ids_contain_im_end(tokenizer: Tokenizer) -> None:
    im_end = tokenizer.token_id("<|im_end|>")
    assert im_end is not None
    assert im_end in tokenizer.eos_token_ids
    assert tokenizer.bos_token_id == tokenizer.token_id("<|im_start|>")
    assert tokenizer.vocab_size == 49152


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hello",
        [{"role": "user"}],
        [{"content": "no role"}],
        [{"role": "wizard", "content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": "user", "content": ["a", "b"]}],
        ["not an object"],
    ],
)
def test_malformed_messages_are_invalid_requests(tokenizer: Tokenizer, messages: Any) -> None:
    with pytest.raises(InvalidRequestError):
        tokenizer.encode_chat(messages)


def test_template_raise_exception_is_an_invalid_request(tmp_path: Path, smollm2_dir: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((smollm2_dir / name).read_bytes())
    (tmp_path / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
        "{% for m in messages %}{{ bos_token + m['content'] + eos_token }}{% endfor %}"
    )
    tokenizer = Tokenizer(tmp_path)
    assert tokenizer.render_chat([{"role": "user", "content": "a"}]) == "<|im_start|>a<|im_end|>"
    with pytest.raises(InvalidRequestError, match="user first"):
        tokenizer.render_chat([{"role": "system", "content": "a"}])


def test_template_from_tokenizer_config_is_used(tmp_path: Path, smollm2_dir: Path) -> None:
    import json

    (tmp_path / "tokenizer.json").write_bytes((smollm2_dir / "tokenizer.json").read_bytes())
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}[{{ m['role'] }}]{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer(tmp_path).render_chat([{"role": "user", "content": "x"}]) == "[user]"


def test_a_model_without_template_refuses_chat(tmp_path: Path, smollm2_dir: Path) -> None:
    (tmp_path / "tokenizer.json").write_bytes((smollm2_dir / "tokenizer.json").read_bytes())
    tokenizer = Tokenizer(tmp_path)
    assert tokenizer.chat_template is None
    with pytest.raises(InvalidRequestError, match="no chat template"):
        tokenizer.encode_chat([{"role": "user", "content": "x"}])
