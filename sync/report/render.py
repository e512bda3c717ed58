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
        "cuts": "Cut points", "no_cuts": "none: nobody was scored",
        "held": "{n:,} in the store, none completed", "held_later": "{n:,} in the store, none by the as-of",
        "boundary": "Falling-asleep boundary", "silent_days": "Silent days",
        "p_return": "P(return)", "remind": "remind on day {r}", "rarely": "they rarely return after day {d}",
        "knee": "the curve's knee: day {d}",
        "summary_line": "Remind on day {r}, they rarely return after day {d}.",
        "knee_line": "Remind on day {r}. Day {d} is the knee of the return curve, not a day after which they rarely "
                     "return: the chance of buying again within {w} days never drops below {p} in the history "
                     "(its lowest: {low}).",
        "in_window": "Customers inside the reminder window today (the list to contact now)",
        "gaps": "Days between purchases (percentiles)", "no_boundary": "No boundary",
        "predictions": "Predictions", "not_fitted": "Not fitted", "churn_risk": "Churn risk by segment",
        "low": "low", "medium": "medium", "high": "high", "unknown": "unknown", "avg_clv": "Average CLV",
        "expected_orders": "Expected orders (next horizon)", "destinations": "Destinations",
        "destination": "Destination", "last_run": "Last run", "status": "Status", "changes": "Changes",
        "never": "never run", "none_configured": "No destinations configured.",
        "mapped": "Segment → tag: contacts in the ledger",
        "score": "Score", "recency_range": "Recency, days (R)", "frequency_range": "Orders (F)",
        "monetary_range": "Monetary (M)", "rule": "rule",
        "axes_quantile": "Under each score: the range of its customers' values (quantile scoring).",
        "axes_thresholds": "Under each score: its cut points ([segmentation.thresholds]).",
        "clv": "Customer lifetime value (CLV) over {d} days by segment",
        "clv_note": "Box: the middle half (25–75%); line: median; dot: mean; whiskers: 10–90%.",
        "p10": "10%", "q1": "25%", "median": "median", "q3": "75%", "p90": "90%", "mean": "mean", "max": "max",
        "expected_total": "Expected orders in the next {d} days: {n}",
        "reorder": "Reorder due now", "reorder_due": "Reorder due",
        "reorder_line": "{n} customers are due to reorder now (their next-order date is reached or within the "
                        "reminder lead).",
        "days_late": "Days past the next-order date", "upcoming": "not reached yet",
        "holdout": "Holdout check: predicted vs actual purchases",
        "holdout_line": "Refitted on the orders up to {cal}, the model predicted {p} purchases by these {c} "
                        "customers in the next {d} days; they made {a}.",
        "holdout_none": "Holdout check not available", "repeat_before": "Repeat purchases before the check",
        "predicted": "predicted", "actual": "actual", "per_customer": "per customer", "total": "total",
        "movement": "Movement between segments", "sizes": "Segment sizes at each recorded run",
        "date": "Date", "matrix": "From → to since the previous recorded run ({a} → {b})",
        "from_to": "From (rows) → to (columns)", "new": "(new)", "gone": "(gone)",
        "moved_line": "{m} customers changed segment, {n} are new, {g} left.",
        "curve_table": "The curve's points", "sizes_table": "Customers per segment at each run",
    },
    "ru": {
        "as_of": "На дату", "range": "Заказы с", "to": "по", "orders": "Заказы", "customers": "Клиенты",
        "revenue": "Выручка", "bad_rows": "Плохие строки", "warnings": "Предупреждения", "preset": "Пресет",
        "method": "оценка", "navigator": "Сегменты", "segment": "Сегмент", "share": "Доля",
        "avg_check": "Средний чек", "avg_repeat": "Повторных покупок в среднем", "todo": "Что делать",
        "grid": "RFM-сетка (давность × частота)", "cell": "Ячейка", "avg_monetary": "Средняя сумма",
        "legend": "Цвет рамки: сегмент большинства клиентов ячейки.",
        "cuts": "Пороги", "no_cuts": "нет: ни один клиент не оценён",
        "held": "в базе {n:,}, ни одного выполненного", "held_later": "в базе {n:,}, ни одного до этой даты",
        "boundary": "Граница засыпания", "silent_days": "Дней без покупок",
        "p_return": "P(возврата)", "remind": "напомнить на {r}-й день", "rarely": "после {d}-го дня почти не возвращаются",
        "knee": "излом кривой: {d}-й день",
        "summary_line": "Напомните на {r}-й день: после {d}-го дня клиенты почти не возвращаются.",
        "knee_line": "Напомните на {r}-й день. {d}-й день — излом кривой возврата, а не день, после которого клиенты "
                     "почти не возвращаются: вероятность покупки в течение {w} дн. в истории не опускается ниже {p} "
                     "(самая низкая: {low}).",
        "in_window": "Клиентов в окне напоминания сегодня (кому написать сейчас)",
        "gaps": "Дней между покупками (перцентили)", "no_boundary": "Граница не найдена",
        "predictions": "Прогнозы", "not_fitted": "Модели не обучены", "churn_risk": "Риск оттока по сегментам",
        "low": "низкий", "medium": "средний", "high": "высокий", "unknown": "неизвестно",
        "avg_clv": "Средний CLV", "expected_orders": "Ожидаемые заказы (горизонт)", "destinations": "Назначения",
        "destination": "Назначение", "last_run": "Последний запуск", "status": "Статус", "changes": "Изменения",
        "never": "ещё не запускалось", "none_configured": "Назначения не настроены.",
        "mapped": "Сегмент → тег: контактов в журнале",
        "score": "Балл", "recency_range": "Давность, дней (R)", "frequency_range": "Заказов (F)",
        "monetary_range": "Сумма (M)", "rule": "правило",
        "axes_quantile": "Под каждым баллом: диапазон значений его клиентов (квантили).",
        "axes_thresholds": "Под каждым баллом: его пороги ([segmentation.thresholds]).",
        "clv": "Ценность клиента (CLV) за {d} дн. по сегментам",
        "clv_note": "Прямоугольник: средняя половина (25–75%); черта: медиана; точка: среднее; усы: 10–90%.",
        "p10": "10%", "q1": "25%", "median": "медиана", "q3": "75%", "p90": "90%", "mean": "среднее",
        "max": "максимум",
        "expected_total": "Ожидаемых заказов за следующие {d} дн.: {n}",
        "reorder": "Пора повторить заказ", "reorder_due": "Пора заказать",
        "reorder_line": "{n} клиентам пора сделать повторный заказ (дата следующего заказа наступила или "
                        "наступит в пределах срока напоминания).",
        "days_late": "Дней после даты следующего заказа", "upcoming": "ещё не наступила",
        "holdout": "Проверка на отложенном периоде: прогноз и факт",
        "holdout_line": "Модель, обученная на заказах до {cal}, предсказала {p} покупок этих {c} клиентов за "
                        "следующие {d} дн.; они сделали {a}.",
        "holdout_none": "Проверка на отложенном периоде недоступна",
        "repeat_before": "Повторных покупок до проверки",
        "predicted": "прогноз", "actual": "факт", "per_customer": "на клиента", "total": "всего",
        "movement": "Переходы между сегментами", "sizes": "Размеры сегментов по записанным запускам",
        "date": "Дата", "matrix": "Откуда → куда с предыдущего записанного запуска ({a} → {b})",
        "from_to": "Откуда (строки) → куда (столбцы)", "new": "(новые)", "gone": "(ушли)",
        "moved_line": "{m} клиентов сменили сегмент, {n} новых, {g} выбыли.",
        "curve_table": "Точки кривой", "sizes_table": "Клиентов в сегментах по запускам",
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
    marks = (t["remind"].format(r=b["reminder_day"]), t["knee" if b.get("method") == "knee" else "rarely"].format(
        d=b["days"]))
    pred, move = data["predictions"], data.get("movement")
    svg = {
        "grid": charts.heatmap(data["grid"], colours, t["grid"]),
        "curve": charts.curve(b["curve"], b["days"], b["reminder_day"], t["boundary"], marks),
        "risk": charts.stacked_risk(pred["segments"], t["churn_risk"]),
        "clv": charts.clv_boxes(pred.get("clv", []), colours, t["clv"].format(d=pred.get("clv_horizon_days"))),
        "holdout": charts.holdout_bars(pred.get("holdout", {}).get("groups", []), t["holdout"],
                                       (t["predicted"], t["actual"])),
    }
    if move:  # a segment the preset no longer has (an older history line's) gets the next free colour
        more = [x for x in move["segments"] if x not in colours]
        line_colours = {**colours, **{x: charts.PALETTE[(len(colours) + i) % len(charts.PALETTE)]
                                      for i, x in enumerate(more)}}
        svg["sizes"] = charts.size_lines(move["sizes"], move["segments"], line_colours, t["sizes"])
        svg["matrix"] = charts.transition_matrix(move["matrix"], move["segments"],
                                                 t["matrix"].format(a=move["from"], b=move["to"]), t["new"], t["gone"])
    return _env.get_template("report.html.j2").render(
        d=data, t=t, lang=lang, title=title, cur=currency_symbol, rows=rows, colours=colours, svg=svg,
        risk_colours=charts.RISK_COLOURS)
