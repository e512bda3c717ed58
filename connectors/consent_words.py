"""A consent cell's words (Russian, Uzbek, English; an ESP's exported states) and the SQL that reads them as
'yes', 'no' or 'unknown' (docs/sources/files.md, Consent); a value read as none of them is 'no' and reported
(:mod:`connectors.file_consent`). Read through :mod:`connectors.normalize` too."""

from __future__ import annotations

from .normalize import APOSTROPHES, NO_VALUE, lit


def _spellings(*words: str) -> tuple[str, ...]:
    """``words`` with each apostrophe of theirs typed every way of :data:`~connectors.normalize.APOSTROPHES`."""
    return tuple(dict.fromkeys(w.replace("'", a) for w in words for a in APOSTROPHES))


#: a consent cell's words (compared lower-cased and trimmed); a number typed in Excel comes as 1.0 / 0.0
CONSENT_YES = ("yes", "y", "да", "д", "1", "1.0", "1,0", "true", "t", "on", "subscribed", "согласен", "согласна",
               "согласны", "подписан", "подписана", "ha", "ҳа", "ха", "+",
               # an ESP's or a shop's export of its states (Mailchimp, Shopify, Klaviyo)
               "opt_in", "opt-in", "opted in", "opted_in", "single_opt_in", "double_opt_in", "confirmed_opt_in",
               "confirmed", "opted-in",
               # a phrase a form or a clerk writes, that says nothing but "yes" (Russian, Uzbek, English)
               "согласие дано", "согласие есть", "есть согласие", "согласен на рассылку", "согласна на рассылку",
               "согласны на рассылку", "подписан на рассылку", "подписана на рассылку", "да, согласен",
               "да, согласна", "roziman", "rozi", "розиман", "рози", *_spellings("obuna bo'lgan"), "agreed",
               "i agree", "consented", "consent given")
CONSENT_NO = ("no", "n", "нет", "н", "0", "0.0", "0,0", "false", "f", "off", "unsubscribed", "не согласен",
              "не согласна", "не согласны", "не подписан", "не подписана", "отказ", "отказался", "отказалась",
              "отписан", "отписана", "отписался", "отписалась", *_spellings("yo'q"), "yoq", "йўқ", "йуқ", "йук", "-",
              "not_subscribed", "never_subscribed", "cleaned", "redacted", "invalid",
              "согласие не дано", "нет согласия", "согласия нет", "не согласен на рассылку", "не согласна на рассылку",
              "не согласны на рассылку", "не подписан на рассылку", "не подписана на рассылку", "отказ от рассылки",
              "rozi emas", "rozi emasman", "рози эмас", "розимас", "declined", "refused", "opted out", "opted-out",
              "opted_out", "opt-out", "opt_out", "no consent", "consent withdrawn")
#: what a consent cell may end with that says nothing ("Да.", "yes!"): trimmed before the words are compared
CONSENT_END = ".!;,…"
#: a state that says consent is not given yet (a double opt-in awaiting its confirmation): as Shopify's API reads it
CONSENT_UNKNOWN = ("pending",)


#: the words exports write most, tried first: a CASE tries its arms in turn, on every row of the file
_CONSENT_FIRST = ("", "да", "нет", "yes", "no", "1", "0", "true", "false", "y", "n")


def consent_word_sql(col: str) -> str:
    """A consent cell's text (trimmed, lower-cased, its trailing :data:`CONSENT_END` punctuation dropped) → 'yes' |
    'no' (:data:`CONSENT_YES`, :data:`CONSENT_NO`) | 'unknown' (empty, or a
    :data:`NO_VALUE` word: the cell says nothing) | NULL: a statement rfmsync cannot read, which
    :func:`consent_sql` takes as 'no' and a file source reports (:mod:`connectors.file_consent`).

    One simple ``CASE`` over the words, not ``IN (…)`` (nor ``list_contains``, which DuckDB turns into one): DuckDB
    plans a long ``IN`` list as a hash join of the rows against the list, and a file read through that join in
    parallel lost its order (the rows' file lines, so the bad rows' lines and the latest contact values, came out
    shuffled on a large file). Nor inside another ``CASE`` (``WHEN col IS NULL …``): that one cost 7× the CPU."""
    words = {**dict.fromkeys(("", *NO_VALUE, *CONSENT_UNKNOWN), "unknown"), **dict.fromkeys(CONSENT_YES, "yes"),
             **dict.fromkeys(CONSENT_NO, "no")}
    arms = " ".join(f"WHEN {lit(v)} THEN {lit(words[v])}" for v in dict.fromkeys((*_CONSENT_FIRST, *words)))
    text = f"coalesce(lower(trim({col})), '')"
    # the punctuation only where the words did not match: an rtrim of every cell doubled the column's CPU; a cell of
    # punctuation alone ('.', '…') is a statement rfmsync cannot read (NULL: no, reported), not an empty cell
    return f"CASE {text} {arms} ELSE CASE NULLIF(rtrim({text}, {lit(CONSENT_END)}), '') {arms} END END"


def consent_sql(col: str) -> str:
    """yes/no/да/нет/1/0/true/false… → 'yes' | 'no' | 'unknown' (:func:`consent_word_sql`); a statement it cannot
    read is 'no': never beaten by an older 'yes', never a reason to subscribe (docs/sources/files.md, Consent)."""
    return f"coalesce({consent_word_sql(col)}, 'no')"


__all__ = ["CONSENT_END", "CONSENT_NO", "CONSENT_UNKNOWN", "CONSENT_YES", "consent_sql", "consent_word_sql"]
