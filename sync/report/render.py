"""Render the report's data into one self-contained HTML page (Jinja2, autoescape on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from . import charts
from .playbook import playbook_line

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "as_of": "As of", "range": "Orders from", "to": "to", "orders": "Orders", "customers": "Customers",
        "revenue": "Revenue", "bad_rows": "Bad rows", "warnings": "Warnings", "preset": "Preset",
        "method": "scoring", "navigator": "Segments", "segment": "Segment", "share": "Share",
        "avg_check": "Average check", "avg_repeat": "Average repeat purchases", "todo": "What to do",
        "grid": "RFM grid (recency × frequency)", "cell": "Cell", "avg_monetary": "Average monetary",
        "legend": "Outline colour: the segment of most of the cell's customers.",
        "cuts": "Cut points", "boundary": "Falling-asleep boundary", "silent_days": "Silent days",
        "p_return": "P(return)", "remind": "remind on day {r}", "rarely": "they rarely return after day {d}",
        "summary_line": "Remind on day {r}, they rarely return after day {d}.",
        "in_window": "Customers inside the reminder window today (the list to contact now)",
        "gaps": "Days between purchases (percentiles)", "no_boundary": "No boundary",
        "predictions": "Predictions", "not_fitted": "Not fitted", "churn_risk": "Churn risk by segment",
        "low": "low", "medium": "medium", "high": "high", "unknown": "unknown", "avg_clv": "Average CLV",
        "expected_orders": "Expected orders (next horizon)", "destinations": "Destinations",
        "destination": "Destination", "last_run": "Last run", "status": "Status", "changes": "Changes",
        "never": "never run", "none_configured": "No destinations configured.",
        "mapped": "Segment → tag: contacts in the ledger",
        "score": "Score", "recency_range": "Recency, days (R)", "frequency_range": "Orders (F)",
    },
    "ru": {
        "as_of": "На дату", "range": "Заказы с", "to": "по", "orders": "Заказы", "customers": "Клиенты",
        "revenue": "Выручка", "bad_rows": "Плохие строки", "warnings": "Предупреждения", "preset": "Пресет",
        "method": "оценка", "navigator": "Сегменты", "segment": "Сегмент", "share": "Доля",
        "avg_check": "Средний чек", "avg_repeat": "Повторных покупок в среднем", "todo": "Что делать",
        "grid": "RFM-сетка (давность × частота)", "cell": "Ячейка", "avg_monetary": "Средняя сумма",
        "legend": "Цвет рамки: сегмент большинства клиентов ячейки.",
        "cuts": "Пороги", "boundary": "Граница засыпания", "silent_days": "Дней без покупок",
        "p_return": "P(возврата)", "remind": "напомнить на {r}-й день", "rarely": "после {d}-го дня почти не возвращаются",
        "summary_line": "Напомните на {r}-й день: после {d}-го дня клиенты почти не возвращаются.",
        "in_window": "Клиентов в окне напоминания сегодня (кому написать сейчас)",
        "gaps": "Дней между покупками (перцентили)", "no_boundary": "Граница не найдена",
        "predictions": "Прогнозы", "not_fitted": "Модели не обучены", "churn_risk": "Риск оттока по сегментам",
        "low": "низкий", "medium": "средний", "high": "высокий", "unknown": "неизвестно",
        "avg_clv": "Средний CLV", "expected_orders": "Ожидаемые заказы (горизонт)", "destinations": "Назначения",
        "destination": "Назначение", "last_run": "Последний запуск", "status": "Статус", "changes": "Изменения",
        "never": "ещё не запускалось", "none_configured": "Назначения не настроены.",
        "mapped": "Сегмент → тег: контактов в журнале",
        "score": "Балл", "recency_range": "Давность, дней (R)", "frequency_range": "Заказов (F)",
    },
}

_env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(default=True),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(data: dict[str, Any], *, title: str, lang: str = "en", currency_symbol: str = "",
                playbook: dict[str, str] | None = None, reminder_lead_days: int = 14) -> str:
    """The page: every value escaped by the template, every chart an inline SVG."""
    t = TEXT[lang]
    names = [s["segment"] for s in data["segments"]]
    colours = charts.segment_colours(names)
    b = data["boundary"]
    rows = [{**s, "colour": colours[s["segment"]], "customers_bar": charts.bar(s["customers_pct"], colours[s["segment"]]),
             "revenue_bar": charts.bar(s["revenue_pct"], colours[s["segment"]]),
             "todo": playbook_line(s["segment"], lang, playbook or {}, reminder_lead_days)}
            for s in data["segments"]]
    marks = (t["remind"].format(r=b["reminder_day"]), t["rarely"].format(d=b["days"]))
    svg = {
        "grid": charts.heatmap(data["grid"], colours, t["grid"]),
        "curve": charts.curve(b["curve"], b["days"], b["reminder_day"], t["boundary"], marks),
        "risk": charts.stacked_risk(data["predictions"]["segments"], t["churn_risk"]),
    }
    return _env.get_template("report.html.j2").render(
        d=data, t=t, lang=lang, title=title, cur=currency_symbol, rows=rows, colours=colours, svg=svg)
