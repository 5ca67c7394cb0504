"""The CLIP tokenizer gives the ids of the original one, on hard text (issue #14).

Oracles from outside sdkit, both the BPE tokenizer that CLIP and SD were trained with:
- ``open_clip.tokenizer.SimpleTokenizer`` (what SD2 and SDXL's second encoder use, in SD and in A1111);
- OpenAI CLIP's ``clip.simple_tokenizer.SimpleTokenizer`` (the clip-anytorch package that k-diffusion brings).
Both clean text with ftfy and ``html.unescape``. transformers' slow ``CLIPTokenizer`` (transformers 4, ftfy but no
``html.unescape``) is gone in transformers 5, whose ``CLIPTokenizer`` is the ``tokenizers`` one without ftfy.

The corpus is built here, deterministically: hand-picked hard cases, a seeded generator composing pieces
(>= 2,000 prompts, long ones of several chunks among them), and hypothesis tests with bounded examples.
"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sdkit.text import ClipTokenizer, clip_tokenizer, parse_weights
from sdkit.text.vocabulary import hf_clip_tokenizer

BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@pytest.fixture(scope="module")
def openai_tokenizer():
    from clip.simple_tokenizer import SimpleTokenizer

    return SimpleTokenizer()


# ------------------------------------------------------------------------------------------------ the corpus
HARD_CASES = [
    # plain, and whitespace: tabs, newlines, CR, runs, NBSP, ideographic space, line separator, \x1c (Python
    # whitespace, not Unicode's)
    "a photo of a cat",
    "",
    "   ",
    "\t\n\r",
    "a\tcat\n\non  a\r\nmat",
    "a\u00a0cat\u3000on\u2028a\u2029mat\u0085x\x1cy\x1fz",
    "  leading and trailing  ",
    # HTML entities: named, numeric, hex, double-escaped, without ";", unknown, next to "<" (ftfy leaves those)
    "fish &amp; chips",
    "fish &amp;amp; chips",
    "fish &amp;amp;amp; chips",
    "&lt;lora:foo:0.8&gt;",
    "it&#39;s &quot;quoted&quot; &#x27;x&#x27;",
    "&copy 2020 &reg &amp &lt",
    "R&D, AT&T, 5 & 6, &&& &;",
    "&notit; &notin; &nbsp;&nbsp;x",
    "<b>bold</b> &amp; <i>e&#769;</i>",
    "<i>&amp;amp;</i> &#0; &#x1b; &#xd800; &#128049; &#x1F431;",
    "&unknownentity; &#99999999; &#x110000;",
    # curly quotes, dashes, ellipsis, primes
    "\u201cquoted\u201d \u2018single\u2019 don\u2019t \u201eGerman\u201c \u00abguillemets\u00bb",
    "en\u2013dash em\u2014dash\u2026 5\u2032 6\u2033 \u2212minus",
    # ligatures, full-width, half-width, compatibility forms
    "\ufb01ne \ufb02ower \ufb00 \ufb03 \ufb04 \ufb06 \u0132 \u01c6",
    "\uff21\uff22\uff23\uff11\uff12\uff13 \uff43\uff41\uff54\uff0c\uff01\uff1f",
    "\uff08\uff43\uff41\uff54\uff1a\uff11\uff0e\uff15\uff09",
    "\uff76\uff80\uff76\uff85 \uffe5100 \uff5e",
    "\u2460\u2461 \u00bd \u00b2 \u2168 \u212a\u212b \u2126 \U0001d400\U0001d401 \u24b6",
    # mojibake (UTF-8 read as Latin-1 / Windows-1252), C1 controls
    "caf\u00c3\u00a9 cr\u00c3\u00a8me br\u00c3\u00bbl\u00c3\u00a9e",
    "\u00e2\u20ac\u0153smart quotes\u00e2\u20ac\u009d and \u00e2\u20ac\u201cdashes",
    "\u00c3\u00a9\u00c3\u00a8 \u00e2\u0080\u0099 x\u0080y\u009fz",
    # accents, combining marks, case oddities
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00dcBER stra\u00dfe STRASSE",
    "cafe\u0301 nai\u0308ve a\u0300\u0301\u0302\u0303 \u0345 i\u0307",
    "\u0130stanbul \u0131 \u03a3\u039f\u03a3 \u1e9e \u01c5 \u1f88 \u0149",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dalgo",
    # scripts: CJK, Japanese, Korean, Arabic, Hebrew, Devanagari, Thai, Cyrillic, Greek, Georgian, Armenian
    "\u732b\u306e\u5199\u771f \u30cd\u30b3 \u306d\u3053 \uace0\uc591\uc774 \u1100\u1161\u11a8",
    "\u0642\u0637\u0629 \u0639\u0631\u0628\u064a\u0629 \u0661\u0662\u0663 \u200f\u05d7\u05ea\u05d5\u05dc\u200e",
    "\u092c\u093f\u0932\u094d\u0932\u0940 \u0e41\u0e21\u0e27 \u043a\u043e\u0442 \u039a\u03b1\u03c4",
    "\u10d9\u10d0\u10e2\u10d0 \u056f\u0561\u057f\u0578\u0582",
    "\U00020000\U0002a700\U00031350 \u3400 \u4e00\u9fff",
    # emoji: plain, ZWJ sequences, skin tones, flags, keycaps, variation selectors, tags
    "\U0001f431 \U0001f408\u200d\u2b1b \U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f44d\U0001f3fb\U0001f44d\U0001f3ff \U0001f9d1\U0001f3fd\u200d\U0001f680",
    "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5 \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "1\ufe0f\u20e3 #\ufe0f\u20e3 \u2764\ufe0f \u2764\ufe0e \u263a",
    # invisible and control characters: NUL, ESC sequences, zero-width, BOM, bidi, DEL, soft hyphen
    "a\x00b\x01c\x07d\x08e\x0bf\x0cg\x7fh",
    "\x1b[31mred\x1b[0m \x1b]0;title\x07",
    "zero\u200bwidth\u200cjoin\u200dx\ufeffbom\u00adsoft\u2060wj",
    "\u202eevil\u202c \u2066iso\u2069 \ufff9a\ufffab\ufffb",
    "\ufffd replacement \ufffc object",
    # lone and paired surrogates, private use, noncharacters, unassigned
    "a\ud800b",
    "\udfff",
    "x\ud83d\udc31y \ud83d",
    "\ue000\uf8ff \U000f0000 \ufdd0\uffff \U0010ffff \u0378",
    # contractions and apostrophes (CLIP's pre-tokenizer has English contractions)
    "it's don't we're they've i'm we'll he'd IT'S DON'T",
    "'s 't 're 's's ''s rock'n'roll o'clock",
    # digits and numbers
    "8k uhd 4k 1080p 3.14159 1,000,000 -5 +3 2024-01-01 12:30",
    # special tokens spelled out in a prompt that neither tokenizer treats as special
    "<|startoftext",
    "endoftext|>",
    "<|end of text|>",
    "<<|",
    "|>|>",
    # A1111 syntax characters, escaped or not (content ids: the text as is)
    "(masterpiece:1.2), [blurry], ((best quality)), \\(literal\\), a:b, [a:b:0.5], [a|b], break",
    "<lora:name:0.8> <hypernet:x:1> {a|b} __wildcard__ (cat:-1) ((((((deep))))))",
    # punctuation runs
    "!!! ??? ... ,,, ;;; --- ___ *** ### @@@ $$$ %%% ^^^ ~~~ ``` ||| /// \\\\\\",
    "! !! !!! !!!! a! b!! ?! !? .!",
    "masterpiece, best quality, ultra-detailed, 8k, photorealistic:1.4, (((intricate)))",
]

PIECES = [
    piece
    for case in HARD_CASES
    for piece in re.split(r"(?<=\s)|(?=\s)", case)
    if piece.strip()
] + [
    "photo", "cat", "dog", "masterpiece", "best quality", "highly detailed", "portrait of a woman",
    "cyberpunk city at night", "oil painting", "by greg rutkowski", "trending on artstation", ",", ", ", ".",
    "(", ")", "[", "]", ":", "\\", "|", "{", "}", "<", ">", "&", ";", "#", "'", '"', "`", "-", "_", "/", "=",
    "&amp;", "&lt;", "&gt;", "&#39;", "&quot;", "&nbsp;", "&amp;amp;", "&#x1F431;", "&copy", "&eacute;",
    "\u201c", "\u201d", "\u2018", "\u2019", "\ufb01", "\uff21", "\uff11", "\u3000", "\u00a0", "\u200b", "\u200d",
    "\U0001f3fb", "\ufe0f", "\u0301", "\u0308", "\u20e3", "\U0001f1fa", "\U0001f1f8", "\x00", "\x1b", "\x7f",
    "\t", "\n", "\r\n", "\ud800", "\udc00", "\ud83d\udc31",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", ", ", "", "\n", "\t", "  ", ",", "\u3000", "&nbsp;", "\u00a0"]


def generated_prompts(n: int = 2000, seed: int = 14) -> list[str]:
    """Seeded compositions of pieces: mostly short prompts, every tenth a long one (several chunks)."""
    rng = random.Random(seed)
    prompts = []
    for k in range(n):
        count = rng.randint(30, 160) if k % 10 == 0 else rng.randint(1, 12)
        parts = [rng.choice(PIECES) for _ in range(count)]
        prompts.append("".join(p + rng.choice(SEPARATORS) for p in parts).replace("BREAK", "break"))
    return prompts


CORPUS = HARD_CASES + generated_prompts()


# ------------------------------------------------------------------------------------------------ helpers
def literal(prompt: str) -> str:
    """The prompt with A1111's bracket syntax escaped, so that all of it is text (one span)."""
    return re.sub(r"([()\[\]\\])", r"\\\1", prompt)


def chunked(ids: list[int], pad: int) -> list[list[int]]:
    """A1111's layout of a prompt's ids: chunks of 75, each BOS + ids + EOS + padding to 77; at least one."""
    chunks = [ids[k : k + 75] for k in range(0, max(len(ids), 1), 75)]
    return [[BOS, *c, EOS] + [pad] * (75 - len(c)) for c in chunks]


def mismatches(prompts: list[str], expected, actual) -> list[str]:
    return [f"{p!r}: expected {expected(p)}, got {actual(p)}" for p in prompts if actual(p) != expected(p)]


# ------------------------------------------------------------------------------------------------ tests
def test_the_corpus_is_large_and_has_long_prompts(open_clip_tokenizer) -> None:
    assert len(CORPUS) >= 2000
    lengths = [len(open_clip_tokenizer.encode(p)) for p in CORPUS]
    assert sum(n > 75 for n in lengths) >= 100 and sum(n > 150 for n in lengths) >= 20  # long, several chunks


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_content_ids_equal_open_clip(family: str, open_clip_tokenizer) -> None:
    tokenizer = clip_tokenizer(family)
    bad = mismatches(CORPUS, open_clip_tokenizer.encode, lambda p: tokenizer.encode_text(p)[0])
    assert not bad, f"{len(bad)} of {len(CORPUS)} prompts differ, e.g. " + "; ".join(bad[:3])


def test_content_ids_equal_openai_clip(openai_tokenizer) -> None:
    tokenizer = clip_tokenizer("sd1")
    bad = mismatches(CORPUS, openai_tokenizer.encode, lambda p: tokenizer.encode_text(p)[0])
    assert not bad, f"{len(bad)} of {len(CORPUS)} prompts differ, e.g. " + "; ".join(bad[:3])


def test_sd2_first_chunk_equals_open_clip_tokenize() -> None:
    """open_clip.tokenize truncates to 77 with EOS last and pads with 0: SD2's first chunk, exactly."""
    import open_clip

    tokenizer = clip_tokenizer("sd2")
    oracle = dict(zip(CORPUS, open_clip.tokenize(CORPUS, context_length=77).tolist(), strict=True))
    bad = mismatches(CORPUS, oracle.__getitem__, lambda p: tokenizer(literal(p)).ids[0].tolist())
    assert not bad, f"{len(bad)} of {len(CORPUS)} prompts differ, e.g. " + "; ".join(bad[:3])


@pytest.mark.parametrize("family, pad", [("sd1", EOS), ("sd2", 0)])
def test_all_chunks_equal_the_oracle_ids_laid_out(family: str, pad: int, open_clip_tokenizer) -> None:
    tokenizer = clip_tokenizer(family)
    bad = mismatches(
        CORPUS,
        lambda p: chunked(open_clip_tokenizer.encode(p), pad),
        lambda p: tokenizer(literal(p)).ids.tolist(),
    )
    assert not bad, f"{len(bad)} of {len(CORPUS)} prompts differ, e.g. " + "; ".join(bad[:3])


WEIGHTED = [
    "(masterpiece:1.2), &amp; (\u201ccaf\u00e9\u201d:0.8) [\ufb01ne] ((\uff21\uff22))",
    "a (cat &amp;amp; dog) BREAK \U0001f431 [\u732b:1.1]",
    "(  spaces  :1.3)(\tnext\t)  [ &lt;tag&gt; ]",
    "(\U0001f44d\U0001f3fb:1.5)\u200d(\U0001f680)",
    "caf\u00c3\u00a9 (cr\u00c3\u00a8me:1.1) it(&#39;s:1.2) fine",
]


@pytest.mark.parametrize("prompt", WEIGHTED)
def test_weighted_spans_are_tokenized_one_by_one_as_a1111_does(prompt: str, open_clip_tokenizer) -> None:
    """A1111 tokenizes each span of the weight syntax on its own (the clean-up strips each one)."""
    ids: list[int] = []
    chunks: list[list[int]] = []
    for span in parse_weights(prompt):
        if span.chunk_break:
            chunks += chunked(ids, EOS)
            ids = []
        else:
            ids += open_clip_tokenizer.encode(span.text)
    chunks += chunked(ids, EOS)
    assert clip_tokenizer("sd1")(prompt).ids.tolist() == chunks


def test_known_ids() -> None:
    sd1, sd2 = clip_tokenizer("sd1"), clip_tokenizer("sd2")
    assert sd1("a photo of a cat").ids[0, :7].tolist() == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert sd1("photorealistic cat").ids[0, :5].tolist() == [BOS, 1153, 16157, 2368, EOS]
    # diffusers issue #4153, open_clip.tokenize("! !! !!!") as printed there; the HF SD2 tokenizer gives 0s
    assert sd2("! !! !!!").ids[0, :6].tolist() == [BOS, 256, 748, 995, EOS, 0]
    # the clean-up, each against the plain spelling
    same = {
        "Fish &amp;amp; Chips": "fish & chips",
        "\u201cCAT\u201d": '"cat"',
        "\ufb01ne \uff21\uff22\uff11": "fine ab1",
        "caf\u00c3\u00a9": "caf\u00e9",
        " a\t\n cat \u3000": "a cat",
        "a\ud800b": "a\ufffdb",
        "\ud83d\udc31": "\U0001f431",
    }
    for messy, clean in same.items():
        assert sd1(messy).ids.tolist() == sd1(clean).ids.tolist(), messy


def test_sd2_tokenizer_from_a_folder_keeps_exclamation_marks(tmp_path) -> None:
    """A real SD2/SDXL tokenizer folder adds "!" as its pad token; the words keep their "!" all the same."""
    from transformers import CLIPTokenizer

    hf_clip_tokenizer("!").save_pretrained(tmp_path / "tokenizer_2")
    loaded = ClipTokenizer.from_hf(CLIPTokenizer.from_pretrained(tmp_path / "tokenizer_2"), "sdxl")
    assert loaded("wow!! cat!").ids[0, :6].tolist() == [BOS, 2781, 748, 2368, 256, EOS]
    assert loaded.pad_id == 0 and loaded("cat").ids[0, 3:].eq(0).all()


def test_special_tokens_spelled_out(openai_tokenizer, open_clip_tokenizer) -> None:
    """OpenAI's tokenizer (and every HF CLIP tokenizer) reads "<|endoftext|>" in a prompt as the EOS token; sdkit
    does as OpenAI's does. open_clip names its special tokens "<start_of_text>"/"<end_of_text>" instead, so there
    the spelled-out forms swap roles: the one place where the two oracles differ."""
    tokenizer = clip_tokenizer("sd1")
    for prompt in ["a <|endoftext|> b", "x<|startoftext|>y", "<|ENDOFTEXT|>", "<<|endoftext|>", "<end_of_text>"]:
        assert tokenizer.encode_text(prompt)[0] == openai_tokenizer.encode(prompt), prompt
    assert tokenizer.encode_text("a <|endoftext|>")[0] == [320, EOS]
    assert open_clip_tokenizer.encode("a <|endoftext|>") != [320, EOS]  # the documented difference


def test_hostile_text_gives_ids_or_a_value_error(open_clip_tokenizer) -> None:
    tokenizer = clip_tokenizer("sd1")
    # lone surrogates: ftfy (in both oracles) makes them U+FFFD, so they are ids, not the library's TypeError
    for prompt in ["a\ud800b", "\udfff", "\ud83d", "x\udc31\ud83d"]:
        assert tokenizer(prompt).ids.tolist() == chunked(open_clip_tokenizer.encode(prompt), EOS), repr(prompt)
    assert tokenizer("\x00" * 10).ids[0, :2].tolist() == [BOS, EOS]  # control characters are removed
    long_text = "cat " * 25_000  # 100k characters
    ids, _, _ = tokenizer.encode_text(long_text)
    assert ids == [2368] * 25_000
    with pytest.raises(ValueError, match="prompt"):  # the prompt parser's length limit
        tokenizer(long_text)
    with pytest.raises(TypeError, match="prompt must be a str"):
        tokenizer(b"a cat")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizer.encode_text(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ hypothesis
ANY_TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=60)
PIECEWISE = st.lists(st.one_of(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=40).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(ANY_TEXT, PIECEWISE))
def test_any_text_gives_the_ids_of_both_oracles(text: str, open_clip_tokenizer, openai_tokenizer) -> None:
    from open_clip.tokenizer import basic_clean

    cleaned = basic_clean(text).lower()
    assume("<|" not in cleaned and "_of_text>" not in cleaned)  # spelled-out special tokens: tested above
    ids = clip_tokenizer("sd2").encode_text(text)[0]
    assert ids == open_clip_tokenizer.encode(text) == openai_tokenizer.encode(text)
    assume("BREAK" not in text)
    assert clip_tokenizer("sd1")(literal(text)).ids.tolist() == chunked(ids, EOS)
