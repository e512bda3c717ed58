"""cp1251 or cp866: which 8-bit Cyrillic encoding a file's bytes are in, by the letters each reads them as in
Cyrillic words and, when both read as many, by how plausible each reading's words are. A part of
:mod:`connectors.file_encoding`."""

from __future__ import annotations

import re

#: a run of two or more Cyrillic letters: a word, as :func:`cyrillic_8bit` counts them (not a stray symbol). All of
#: the block, Serbian and Macedonian's Ђ Љ Њ Ћ Џ Ј included: a cp1251 export of Serbian names (Ђорђе Јовановић) read as
#: cp866 has fewer of them. A cp866 «Петр» whose bytes cp1251 reads as «ЏҐва», a word as long, is a tie
#: :func:`_implausible` breaks (Џ, Ґ: not Russian, nor of one other alphabet).
CYRILLIC_RUN = re.compile(r"[\u0400-\u04ff]{2,}")


#: the Russian alphabet: a tie of :func:`cyrillic_8bit`'s count goes to the reading with fewer letters outside it
_RUSSIAN = frozenset("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")

#: the other Cyrillic alphabets whose letters cp1251 has (Uzbek's ғ қ ҳ it has not): their letters and vowels (the
#: syllabic р of Serbian and Macedonian: ``Срб``). A word all of whose letters are one of these alphabets', with a
#: vowel of it and a word's case (``бања``, ``Џон``, ``Љубав``, ``Ўзбек``) is a plausible word of that language
_ALPHABETS = (
    ("абвгдђежзијклљмнњопрстћуфхцчџш", "аеиоур"),  # Serbian
    ("абвгдѓежзѕијклљмнњопрстќуфхцчџш", "аеиоур"),  # Macedonian
    ("абвгґдеєжзиіїйклмнопрстуфхцчшщьюя", "аеєиіїоуюя"),  # Ukrainian
    ("абвгдеёжзійклмнопрстуўфхцчшыьэюя", "аеёіоуыэюя"),  # Belarusian
    ("абвгдеёжзийклмнопрстуўфхцчшъьэюя", "аеёиоуўэюя"),  # Uzbek (Cyrillic)
)

#: what no Russian word does (lowercase), and what cp866 makes of cp1251 letters: ъ ь ы starting a word, ъ ending
#: one, ъ ь ы after a vowel or ъ ь, э after е ё ю я (cp1251's к л м н are cp866's ъ ы ь э, its о п cp866's ю я:
#: ``ђак`` is ``Рръ``, ``Џон`` ``Пюэ``, ``сок`` ``ёюъ``). A known miss of ``ъ$``: a cp866 word of the pre-1918
#: spelling (``Миръ``, ``Пиръ``, ``Юръ``) is read as cp1251 in a tie (docs/sources/files.md); without the rule the
#: cp1251 ``ђак`` and ``Ўзбек`` are read as cp866
_NOT_RUSSIAN = re.compile(r"^[ъьы]|ъ$|[аеёиоуыэюяъь][ъьы]|[еёюя]э")
#: a capital after a small letter: in no word's case (cp1251's small ђ љ њ ќ ћ џ are cp866's capitals Р Ъ Ь Э Ю Я:
#: ``бања`` is ``срЬр``; cp866 ``Юг`` is cp1251 ``ћЈ``)
_CASE = re.compile(r"[a-zа-яёђѓљњќћџўјґєіїѕ][A-ZА-ЯЁЂЃЉЊЌЋЏЎЈҐЄІЇЅ]")


def _no_russian_word(word: str) -> bool:
    """Whether no Russian word could be ``word`` (:data:`_CASE`, :data:`_NOT_RUSSIAN`)."""
    return bool(_CASE.search(word) or _NOT_RUSSIAN.search(word.lower()))


#: a Cyrillic word in cp1251 quotes, «…», „…“, “…”, ‘…’, ‚…‘ or ‹…›: cp866 reads those quotes as letters (л, Д, У,
#: Ф, С, Т, В, Л, Ы; » is ╗)
_QUOTED_1251 = re.compile(rb"[\xab\x84\x93\x91\x82\x8b][\xa8\xb8\xc0-\xff]{2,}[\xbb\x93\x94\x91\x92\x9b]")
#: a cp1251 opening quote («, „, “, ‘, ‚, ‹) before a word, at a word's start, with no closing quote (``«сок``): cp866
#: reads it as a capital or л starting a word (``Уют``, ``луч``), so it is taken for a quote only when the cp866 word
#: it would start is no Russian word (``«сок`` is ``лёюъ``: :func:`_no_russian_word`)
_OPEN_1251 = re.compile(rb"(?<![0-9A-Za-z\x80-\xff])[\xab\x84\x93\x91\x82\x8b](?=[\xa8\xb8\xc0-\xff]{2,})")
#: cp1251 punctuation right after a cp1251 letter (a word's end): the ellipsis …, the dashes — –, the closing quotes
#: ’ ” › and the others above but «, which cp866 reads as capitals (Е, Ч, Ц, Т, Ф, Ы…): ``сок…`` would be cp866
#: ``сок`` and one more letter, ``хлеб—молоко`` one word of 11 letters. cp866 words do not put a capital after a
#: small letter (its р–я, и: the bytes cp1251 has its letters at); its л (0xAB, cp1251 «) is left alone (``ул.``)
_END_1251 = re.compile(rb"(?<=[\xa8\xb8\xc0-\xff])[\x82\x84\x85\x8b\x91-\x97\x9b]")


def _open_quote(m: re.Match[bytes]) -> bytes:
    """A cp1251 opening quote matched by :data:`_OPEN_1251`: a space (no letter) when the cp866 word it starts is
    no Russian word, else itself."""
    word = CYRILLIC_RUN.match(m.string[m.start():m.start() + 64].decode("cp866"))
    return b" " if word and _no_russian_word(word.group()) else m.group()


def _words_8bit(data: bytes) -> dict[str, list[str]]:
    """The Cyrillic words (:data:`CYRILLIC_RUN`) ``data`` reads as in cp1251 and in cp866. cp1251 punctuation at a
    word's edge (``«оплачен»``, ``„хлеб“``: :data:`_QUOTED_1251`; ``«сок``: :data:`_OPEN_1251`; ``сок…``,
    ``хлеб—молоко``: :data:`_END_1251`) is no letter of its cp866 reading."""
    unquoted = _QUOTED_1251.sub(lambda m: b" " + m.group()[1:-1] + b" ", data)
    unquoted = _END_1251.sub(b" ", _OPEN_1251.sub(_open_quote, unquoted))
    return {e: CYRILLIC_RUN.findall(d.decode(e, "replace")) for e, d in (("cp1251", data), ("cp866", unquoted))}


def _other_alphabet(word: str) -> bool:
    """Whether ``word`` is a plausible word of one of :data:`_ALPHABETS`: its letters that alphabet's, a vowel of it
    among them, and a word's case (lower, Capitalised or capitals)."""
    low = word.lower()
    return not _CASE.search(word) and any(set(low) <= set(letters) and not set(low).isdisjoint(vowels)
                                          for letters, vowels in _ALPHABETS)


def _implausible(words: list[str], encoding: str) -> float:
    """How unlike words of a Cyrillic language ``words`` (one reading's) are: each letter outside the Russian
    alphabet counts 1, or ½ in a plausible word of another alphabet (:func:`_other_alphabet`); in the cp866 reading,
    each word no Russian word could be (:func:`_no_russian_word`: what cp866 makes of cp1251 letters) counts 1
    more."""
    score = 0.0
    for word in words:
        foreign = sum(c not in _RUSSIAN for c in word.lower())
        score += foreign / 2 if foreign and _other_alphabet(word) else foreign
        score += encoding == "cp866" and _no_russian_word(word)
    return score


def cyrillic_8bit(data: bytes) -> str:
    """``cp866`` or ``cp1251``: the one that reads ``data`` as more letters in Cyrillic words (runs of two or more
    Cyrillic letters, not stray symbols); as many: the one whose words are the more plausible (:func:`_implausible`:
    a cp866 «Петр» is cp1251 «ЏҐва», a cp1251 «бања» cp866 «срЬр»), and cp1251 when that ties too (cp1251 «мама»,
    «аб» are cp866 «ьрьр», «рс»: Russian letters both, and which is meant, nothing in the bytes says). Counting bytes
    by range would not do: cp866's letters А–п sit at 0x80–0xAF, where cp1251 has its punctuation (nbsp, —, –, «»,
    “”, …), so a cp1251 export of Latin names with a few dashes would look like cp866. No Cyrillic word either way
    (a dash, a single letter) is cp1251."""
    return decide_8bit(data)[0]


def decide_8bit(data: bytes) -> tuple[str, bool]:
    """:func:`cyrillic_8bit` and :func:`tied_8bit` of ``data``, its words read once."""
    words = _words_8bit(data)
    cp1251, cp866 = sum(map(len, words["cp1251"])), sum(map(len, words["cp866"]))
    if cp1251 == cp866:
        return ("cp866" if _implausible(words["cp866"], "cp866") < _implausible(words["cp1251"], "cp1251")
                else "cp1251"), cp1251 > 0
    return "cp866" if cp866 > cp1251 else "cp1251", False


def tied_8bit(data: bytes) -> bool:
    """Whether ``data`` reads as as many letters in Cyrillic words as cp1251 and as cp866 (:func:`cyrillic_8bit`
    then decides by how plausible the words are: a guess the warning shows both readings of)."""
    return decide_8bit(data)[1]
