"""The default "what to do" line of every segment of the three presets, in English and Russian.

Written from the tracks' purpose: keep the best engaged without discounts, remind the falling-asleep before
the boundary with a reason to come back, win back the churned through cheap channels only, turn beginners into
second-time buyers. ``[report.playbook]`` overrides any line.
"""

from __future__ import annotations

_KEEP = ("Keep them engaged without discounts: early access, personal offers, a referral programme.",
         "Удерживайте без скидок: ранний доступ, персональные предложения, реферальная программа.")
_REMIND = ("Remind them {lead} days before the boundary with a reason to come back (new arrivals, a bonus).",
           "Напомните о себе за {lead} дн. до границы и дайте повод вернуться (новинки, бонус).")
_WINBACK = ("Win them back through cheap channels only (e-mail, messengers); no costly discounts.",
            "Возвращайте только через дешёвые каналы (e-mail, мессенджеры); без дорогих скидок.")
_SECOND = ("Turn them into second-time buyers: a welcome series and a second-purchase offer.",
           "Превратите их в повторных покупателей: приветственная серия и предложение на вторую покупку.")
_ATTENTION = ("Re-engage with a personal recommendation based on what they bought before.",
              "Верните интерес персональной подборкой по прошлым покупкам.")
_OTHER = ("Watch this group; no specific action.", "Наблюдайте за группой; отдельных действий не нужно.")

DEFAULT_PLAYBOOK: dict[str, tuple[str, str]] = {
    # tracks
    "Best active": _KEEP, "Falling asleep": _REMIND, "Churn": _WINBACK, "Beginners": _SECOND,
    # crm-4
    "VIP": _KEEP, "Newcomers with potential": _SECOND, "Loyal": _KEEP, "Sleeping whales": _REMIND,
    "Lost": _WINBACK, "Need attention": _ATTENTION,
    # classic-5
    "Champions": _KEEP, "Loyal customers": _KEEP, "Potential loyalist": _SECOND, "New customers": _SECOND,
    "Promising": _SECOND, "About to sleep": _REMIND, "At risk": _REMIND, "Can't lose them": _REMIND,
    "Hibernating": _WINBACK,
    "Other": _OTHER,
}


def playbook_line(segment: str, lang: str, overrides: dict[str, str], reminder_lead_days: int) -> str:
    """The "what to do" line of ``segment``: the config's override, else the default, else the "Other" line."""
    if segment in overrides:
        return overrides[segment]
    en, ru = DEFAULT_PLAYBOOK.get(segment, _OTHER)
    return (ru if lang == "ru" else en).format(lead=reminder_lead_days)
