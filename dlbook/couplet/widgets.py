"""Chapter 04's widgets: the precomputed gallery and the live box."""
from __future__ import annotations

import html
from typing import Sequence

from torch import nn

from ..data import CharVocab
from .data import normalise
from .decoding import RULES, answer, overlap, rules


def _pair_html(upper: str, answers: Sequence[tuple[str, str]]) -> str:
    """A small table: the upper line, then each (label, line), characters in aligned cells."""
    cell = "padding:2px 6px;text-align:center;font-size:1.25em"
    row = lambda label, line: (f"<tr><td style='padding:2px 8px;color:#555'>{html.escape(label)}</td>"
                               + "".join(f"<td style='{cell}'>{html.escape(c)}</td>" for c in line) + "</tr>")
    body = row("upper line 上联", upper) + "".join(row(lab, line) for lab, line in answers)
    return f"<table style='border-collapse:collapse'>{body}</table>"


def answer_gallery(rows: Sequence[tuple[str, ...]], description: str = "upper line",
                   labels: Sequence[str] = ("model 模型", "human 原下联")):
    """A dropdown over held-out upper lines showing precomputed lower lines (`rows`: the upper
    line, then one line per label); the dropdown and the pages are linked in the browser
    (`jslink`), so it works in the static book without a kernel."""
    import ipywidgets as W

    if not rows:
        raise ValueError("answer_gallery: no rows")
    pages = [W.HTML(_pair_html(r[0], list(zip(labels, r[1:])))) for r in rows]
    stack = W.Stack(pages, selected_index=0)
    dd = W.Dropdown(options=[r[0] for r in rows], index=0, description=description,
                    style={"description_width": "initial"}, layout=W.Layout(width="420px"))
    W.jslink((dd, "index"), (stack, "selected_index"))
    return W.VBox([dd, stack])


def oov_message(vocab: CharVocab, line: str) -> str | None:
    """None if every character of `line` is in the vocabulary, else a sentence naming the others."""
    bad = [c for c in vocab.unknown(line)]
    if not bad:
        return None
    return (f"Not in the model's vocabulary ({len(vocab) - 1:,} characters seen at least twice in the "
            f"corpus's training and test couplets): {'、'.join(bad)}. They are read as the unknown token, so the answer at "
            f"{'that position' if len(bad) == 1 else 'those positions'} is a guess; try another character.")


MAX_LIVE = 40


def live_reply(model: nn.Module, vocab: CharVocab, text: str, top: int = 3) -> str:
    """The HTML the live box shows for `text`: the answer with the top candidates per position,
    or a message (empty input, too long, characters outside the vocabulary). Never raises on
    what a reader may type."""
    line = normalise(text)
    if not line:
        return "<i>Type an upper line (上联), e.g. 晚风摇树树还挺.</i>"
    if len(line) > MAX_LIVE:
        return f"<b>That line has {len(line)} characters;</b> the box answers lines of up to {MAX_LIVE}."
    msg = oov_message(vocab, line)
    lower, cands = answer(model, vocab, line, "copy", top=top)
    rows = [("model 模型", lower)] + [(f"top {k + 1}", "".join(c[k][0] for c in cands)) for k in range(1, top)]
    out = _pair_html(line, rows)
    probs = " ".join(f"{c[0][0]} {c[0][1]:.2f}" for c in cands)
    out += f"<div style='color:#555;font-size:0.9em'>p(top 1) per position: {html.escape(probs)}</div>"
    if msg:
        out = f"<div style='color:#a00'><b>Note.</b> {html.escape(msg, quote=False)}</div>" + out
    return out


def live_box(model: nn.Module, vocab: CharVocab, value: str = "晚风摇树树还挺", top: int = 3):
    """A text box wired to the trained model in this kernel: type an upper line, read the
    answer at once. Needs a running kernel (it does nothing in the static book)."""
    import ipywidgets as W

    box = W.Text(value="", placeholder="上联, e.g. 晚风摇树树还挺", description="upper line",
                 continuous_update=True, style={"description_width": "initial"}, layout=W.Layout(width="420px"))
    out = W.HTML()

    def show(change=None):
        try:
            out.value = live_reply(model, vocab, box.value, top)
        except Exception as e:  # a reply must never take the box down
            out.value = f"<b>Could not answer:</b> {html.escape(str(e))}"

    box.observe(show, names="value")
    box.value = value
    show()
    return W.VBox([box, out])


def gallery_rows(uppers: Sequence[str], answers: dict[str, Sequence[str]], human: Sequence[str],
                 index: Sequence[int]) -> list[list[str]]:
    """Table rows for the gallery: the upper line and, for the human line and each answer,
    the line with the rules it keeps (of the four) and its character overlap with the human
    line (`overlap`)."""
    out = []
    for i in index:
        row = [uppers[i]]
        for name, lines in [("human", human), *answers.items()]:
            kept = sum(rules(uppers[i], lines[i]).values())
            ov = "" if name == "human" else f", overlap {overlap(lines[i], human[i]):.2f}"
            row.append(f"{lines[i]} ({kept}/{len(RULES)} rules{ov})")
        out.append(row)
    return out
