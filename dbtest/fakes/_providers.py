"""The value makers behind :class:`dbtest.fakes.FastFaker`: ``fn(fast, hashes, ns, unique,
**kwargs) -> list``, one value per 64-bit hash (pool picks use 10 bits each)."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbtest.fakes import FastFaker

#: the arithmetic is mod 2**64 (splitmix64)
MASK64 = (1 << 64) - 1
_POOL_BITS = 10  # pools of 1024 values: 10 bits of a 64-bit hash pick one
#: values asked of Faker per provider (a power of two: a hash's low bits pick one)
POOL_SIZE = 1 << _POOL_BITS
_START = datetime(2020, 1, 1, tzinfo=UTC)
_END = datetime(2025, 1, 1, tzinfo=UTC)
#: per-process cache of Faker's pools, keyed by (provider, locale, arguments)
POOLS: dict[tuple[Any, ...], list[Any]] = {}


def key_hash(text: str) -> int:
    """A 64-bit hash of a column key, stable across processes (unlike ``hash``)."""
    return zlib.crc32(text.encode()) * 0x9E3779B1 & MASK64


def hashes(stream: int, ns: Sequence[int]) -> list[int]:
    """splitmix64 of ``stream + n * golden`` for every ``n``: independent 64-bit values."""
    out = []
    for n in ns:
        x = (stream + (n + 1) * 0x9E3779B97F4A7C15) & MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(x ^ (x >> 31))
    return out


def rehash(h: int) -> int:
    """A fresh 64-bit value derived from *h* (one more splitmix64 round)."""
    x = (h + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)



# -- providers: fn(fast, hashes, ns, unique, **kwargs) -> list ---------------------------
_Provider = Callable[..., list[Any]]


def generic(fast: FastFaker, provider: str, hs: list[int], ns: Sequence[int], unique: bool,
            kwargs: dict[str, Any]) -> list[Any]:
    """Any Faker provider: picks from a pool of its output (``unique`` appends ``n``)."""
    pool = fast.pool(provider, **kwargs)
    out = [pool[h & (POOL_SIZE - 1)] for h in hs]
    if unique:
        out = [f"{v} {n}" if isinstance(v, str) else v for v, n in zip(out, ns, strict=True)]
    return out


def _picks(pool: list[Any], hs: list[int], shift: int = 0) -> list[Any]:
    return [pool[(h >> shift) & (POOL_SIZE - 1)] for h in hs]


def _first_name(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    return _suffix(_picks(fast.pool("first_name"), hs), ns, unique)


def _last_name(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    return _suffix(_picks(fast.pool("last_name"), hs), ns, unique)


def _suffix(values: list[str], ns: Sequence[int], unique: bool, sep: str = " ") -> list[str]:
    return [f"{v}{sep}{n}" for v, n in zip(values, ns, strict=True)] if unique else values


def _name(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    first, last = fast.pool("first_name"), fast.pool("last_name")
    out = [f"{first[h & 1023]} {last[(h >> 10) & 1023]}" for h in hs]
    return _suffix(out, ns, unique)


_USER_FORMS = ("{f}.{l}", "{f}{l}", "{f}_{l}", "{f}{l}{d}", "{i}{l}", "{l}.{f}", "{f}{d}",
               "{l}{d}")


def _user_names(fast: FastFaker, hs: list[int]) -> list[str]:
    first = [s.lower() for s in fast.pool("first_name")]
    last = [s.lower().replace("'", "").replace(" ", "") for s in fast.pool("last_name")]
    out = []
    for h in hs:
        f, la = first[h & 1023], last[(h >> 10) & 1023]
        form = _USER_FORMS[(h >> 20) & 7]
        out.append(form.format(f=f, l=la, i=f[:1], d=(h >> 23) % 100))
    return out


def _user_name(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    return _suffix(_user_names(fast, hs), ns, unique, sep="")


def _email(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
           domain: str | None = None) -> list[str]:
    locals_ = _user_names(fast, hs)
    if unique:  # a separator keeps "ann1" + "2" apart from "ann" + "12"
        locals_ = [f"{u}.{n}" for u, n in zip(locals_, ns, strict=True)]
    if domain is not None:
        return [f"{u}@{domain}" for u in locals_]
    domains = fast.pool("free_email_domain")
    return [f"{u}@{domains[(h >> 30) & 1023]}" for u, h in zip(locals_, hs, strict=True)]


def _words_of(words: list[str], h: int, count: int) -> list[str]:
    out = []
    while True:
        for shift in (0, 10, 20, 30, 40, 50):
            out.append(words[(h >> shift) & 1023])
            if len(out) == count:
                return out
        h = rehash(h)


def _word(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    return _suffix(_picks(fast.pool("word"), hs), ns, unique, sep="")


def _words(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
           nb: int = 3) -> list[list[str]]:
    words = fast.pool("word")
    return [_words_of(words, h, nb) for h in hs]


def _count(h: int, nb: int, variable: bool) -> int:
    if not variable or nb <= 1:
        return nb
    spread = max(1, nb * 2 // 5)  # Faker's own spread: +-40%
    return max(1, nb - spread + (h >> 58) % (2 * spread + 1))


def _sentence_from(words: list[str], h: int, nb_words: int, variable: bool) -> str:
    chosen = _words_of(words, rehash(h), _count(h, nb_words, variable))
    return " ".join(chosen).capitalize() + "."


def _sentence(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
              nb_words: int = 6, variable_nb_words: bool = True) -> list[str]:
    words = fast.pool("word")
    out = [_sentence_from(words, h, nb_words, variable_nb_words) for h in hs]
    return [f"{s[:-1]} {n}." for s, n in zip(out, ns, strict=True)] if unique else out


def _sentence_pool(fast: FastFaker) -> list[str]:
    # paragraphs and texts are made of whole sentences: 1024 recombined ones, made once
    key = (fast.locale, "_sentences")
    found = POOLS.get(key)
    if found is None:
        words = fast.pool("word")
        found = [_sentence_from(words, h, 6, True) for h in hashes(key_hash("s"), range(POOL_SIZE))]
        POOLS[key] = found
    return found


def _paragraph_from(sentences: list[str], h: int, nb_sentences: int, variable: bool) -> str:
    count = _count(h, nb_sentences, variable)
    parts = []
    while True:
        for shift in (0, 10, 20, 30, 40):
            parts.append(sentences[(h >> shift) & 1023])
            if len(parts) == count:
                return " ".join(parts)
        h = rehash(h)


def _paragraph(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
               nb_sentences: int = 3, variable_nb_sentences: bool = True) -> list[str]:
    sentences = _sentence_pool(fast)
    return [_paragraph_from(sentences, h, nb_sentences, variable_nb_sentences) for h in hs]


def _paragraphs(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
                nb: int = 3) -> list[list[str]]:
    sentences = _sentence_pool(fast)
    out = []
    for h in hs:
        paras = []
        for _ in range(nb):
            h = rehash(h)
            paras.append(_paragraph_from(sentences, h, 3, True))
        out.append(paras)
    return out


def _text(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
          max_nb_chars: int = 200) -> list[str]:
    sentences = _sentence_pool(fast)
    out = []
    for h in hs:
        text = sentences[h & 1023][:max_nb_chars]
        shift = 10
        while True:
            if shift > 50:
                h, shift = rehash(h), 0
            sentence = sentences[(h >> shift) & 1023]
            shift += 10
            if len(text) + 1 + len(sentence) > max_nb_chars:
                break
            text = f"{text} {sentence}"
        out.append(text)
    return out


def _slug(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    words = fast.pool("word")
    out = ["-".join(_words_of(words, h, 3)) for h in hs]
    return _suffix(out, ns, unique, sep="-")


def _url(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    domains, words = fast.pool("domain_name"), fast.pool("word")
    out = [f"https://{domains[h & 1023]}/{words[(h >> 10) & 1023]}" for h in hs]
    return _suffix(out, ns, unique, sep="/")


def _image_url(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
               width: int = 640, height: int = 480) -> list[str]:
    return [f"https://picsum.photos/seed/{h & 0xFFFFFF:06x}{n if unique else ''}/{width}/"
            f"{height}" for h, n in zip(hs, ns, strict=True)]


def _uuid4(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[uuid.UUID]:
    return [uuid.UUID(int=(h << 64) | rehash(h), version=4) for h in hs]


def _int(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
         min_value: int = 0, max_value: int = 9999) -> list[int]:
    if max_value < min_value:
        raise TypeError("max_value < min_value")
    width = max_value - min_value + 1
    return [min_value + h % width for h in hs]


def _random_int(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
                min: int = 0, max: int = 9999) -> list[int]:  # Faker's names
    return _int(fast, hs, ns, unique, min, max)


def _bool(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
          chance_of_getting_true: int = 50) -> list[bool]:
    return [h % 100 < chance_of_getting_true for h in hs]


def _decimal(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
             left_digits: int | None = None, right_digits: int = 2, positive: bool = True,
             min_value: float | None = None, max_value: float | None = None
             ) -> list[Decimal]:
    scale = 10 ** right_digits
    lo = Decimal(str(min_value)) if min_value is not None else (
        Decimal(0) if positive else -Decimal(10 ** (left_digits or 4)))
    hi = Decimal(str(max_value)) if max_value is not None else Decimal(10 ** (left_digits or 4))
    lo_i, hi_i = int(lo * scale), int(hi * scale)
    width = max(1, hi_i - lo_i)
    quant = Decimal(1).scaleb(-right_digits)
    return [(Decimal(lo_i + h % width) / scale).quantize(quant) for h in hs]


def _float(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
           min_value: float = 0.0, max_value: float = 1000.0) -> list[float]:
    return [min_value + (h >> 11) / (1 << 53) * (max_value - min_value) for h in hs]


def _as_datetime(value: datetime | date | None, default: datetime) -> datetime:
    if value is None:
        return default
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _datetime(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
              start_date: datetime | date | None = None, end_date: datetime | date | None = None,
              tzinfo: Any = UTC) -> list[datetime]:
    start, end = _as_datetime(start_date, _START), _as_datetime(end_date, _END)
    if start.tzinfo is None and tzinfo is not None:
        start, end = start.replace(tzinfo=tzinfo), end.replace(tzinfo=tzinfo)
    span = max(1, int((end - start).total_seconds() * 1_000_000))
    return [start + timedelta(microseconds=(h % span) // 1000 * 1000) for h in hs]


def _date(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
          start_date: date | None = None, end_date: date | None = None) -> list[date]:
    start = start_date or _START.date()
    days = max(1, ((end_date or _END.date()) - start).days)
    return [start + timedelta(days=h % days) for h in hs]


def _element(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool,
             elements: Sequence[Any] = ("a", "b", "c")) -> list[Any]:
    items = list(elements)
    return [items[h % len(items)] for h in hs]


def _ipv4(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    return [f"{10 + h % 200}.{(h >> 8) & 255}.{(h >> 16) & 255}.{1 + (h >> 24) % 254}"
            for h in hs]


def _phone(fast: FastFaker, hs: list[int], ns: Sequence[int], unique: bool) -> list[str]:
    return [f"+1-{200 + h % 800:03d}-{(h >> 10) % 1000:03d}-{(h >> 20) % 10000:04d}"
            for h in hs]


#: providers with a recombining implementation (any other Faker name uses a pool)
PROVIDERS: dict[str, _Provider] = {
    "first_name": _first_name, "last_name": _last_name, "name": _name,
    "user_name": _user_name, "email": _email, "safe_email": _email, "free_email": _email,
    "word": _word, "words": _words, "sentence": _sentence, "paragraph": _paragraph,
    "paragraphs": _paragraphs, "text": _text, "slug": _slug, "url": _url,
    "image_url": _image_url, "uuid4": _uuid4, "pyint": _int, "random_int": _random_int,
    "pybool": _bool, "boolean": _bool, "pydecimal": _decimal, "pyfloat": _float,
    "date_time_between": _datetime, "date_time": _datetime, "date_between": _date,
    "date": _date, "random_element": _element, "ipv4": _ipv4, "phone_number": _phone,
}

