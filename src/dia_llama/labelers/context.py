"""Generic negation / uncertainty context of a mention in a radiology report (NegEx / ConText style).

Nothing here is specific to a data set: the cue lists are the English clinical NegEx / ConText trigger sets (as
packaged by negspacy, MIT licence) and the CheXpert labeler's negation and uncertainty phrases (MIT licence), in
surface form, plus the radiology verbs of "not seen / not detected / is normal".

A report is split into sentences, each sentence into *segments* at ConText termination terms ("but", "however",
"although", "except", "which"...), each segment into *clauses* at commas (a negated comma list closed by "or" /
"nor" or by its verb stays whole: "no nodule, consolidation or mass", "no mass, nodule, infiltration was detected").
A mention then gets one :data:`STATUSES` value:

* ``unc``: an uncertainty cue before it in its clause ("possible", "suggestive of", "in favour of"...) or just after
  it ("cannot be excluded", "?");
* ``neg``: a negation cue before it in its clause ("no", "without", "absence of"...) or after it ("... is not seen",
  "... was not detected", "... is normal"), and no hedge;
* ``neg_hedged``: the same with a hedge ("no *obvious* / *significant* / *definite* ...", "not *clearly* seen"):
  label sources disagree on whether it denies the finding or only its degree;
* ``neg_conj``: negated, but not the first conjunct after the cue ("no mass or *enlarged lymph node*"): whether
  the negation distributes over the coordination is ambiguous;
* ``neg_wide``: no cue in its clause, but a negation before it in its segment, past a comma ("no pleural effusion,
  pleural thickening on both sides": a new finding or the same negation? label sources differ);
* ``pos``: affirmed.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

STATUSES = ("pos", "neg", "neg_hedged", "neg_conj", "neg_wide", "unc")

# NegEx "preceding" negation triggers (negspacy en_clinical) + CheXpert labeler negation phrases.
NEG_PRE = re.compile(
    r"\b(?:no|not|without|none|neither|nor|never|absence of|absent|free of|negative for|"
    r"no (?:evidence|signs?|findings?) of|without (?:evidence|signs?) of|fails? to reveal|"
    r"rules? out|ruled out|resolution of|resolved)\b",
    re.I,
)
# NegEx "following" negation triggers and the radiology verbs of absence / normality.
NEG_POST = re.compile(
    r"\b(?:(?:is|are|was|were|has|have|been)\s+)?not\s+(?:been\s+|be\s+)?(?:\w+ly\s+)?"
    r"(?:seen|found|observed|detected|shown|visible|visuali[sz]ed|identified|noted|present|demonstrated|"
    r"appreciated|evident|obvious|enlarged|increased|thickened|dilated|widened|large|larger|significant)\b"
    r"|\b(?:is|are|was|were)\s+(?:absent|unremarkable|(?:with)?in\s+(?:the\s+)?normal\s+(?:limits|range)|"
    r"(?:\w+ly\s+)?normal)\b"
    r"|\b(?:was|were)\s+ruled\s+out\b|\b(?:disappeared|resolved|no longer)\b",
    re.I,
)
# NegEx pseudo-negations: a negation word that does not deny a finding.
PSEUDO_NEG = re.compile(
    r"\b(?:no|without)\s+(?:further|significant\s+change|(?:definite\s+|interval\s+|suspicious\s+)?change|"
    r"increase|difficulty)\b|\bnot\s+(?:only|necessarily|certain\s+(?:if|whether)|extend|cause|drain)\b"
    r"|\bgram[- ]negative\b|\bnot\s+(?:been\s+)?ruled\s+out\b|\bnot\s+(?:be\s+)?excluded\b",
    re.I,
)
# ConText / CheXpert uncertainty cues, by direction: "possible X", "X in favour of Y" (forward: X is observed, Y
# uncertain) and "X cannot be excluded", "X?" (backward, within a few words). "can be seen" is not uncertain.
UNCERTAIN_PRE = re.compile(
    r"\b(?:possibl[ey]|probabl[ey]|likely|unlikely|suspect\w*|suspicio\w*|suggest\w*|"
    r"(?:may|might|could)(?! be (?:seen|found|observed|noted|visible|detected))|consider\w*|questionabl[ey]|"
    r"uncertain|indeterminate|equivocal|doubtful|borderline|versus|vs|differential|concern(?:ing)? for|"
    r"r/o|rule out|compatible with|in favou?r of|(?:cannot|can ?not) (?:exclude|rule out)|"
    r"recommend\w*)\b"
)
UNCERTAIN_POST = re.compile(
    r"^\W*(?:\w+\W+){0,6}?(?:(?:cannot|can ?not|could not|not) (?:be )?(?:excluded|ruled out)|"
    r"(?:is|are|was|were) (?:\w+ly )?(?:suspected|considered|questionable|possible|probable|likely|uncertain|"
    r"suspicious)|to be (?:excluded|ruled out))\b|^\W*(?:\w+\W+){0,1}?\w*\?"
)
# A hedge between a negation and its mention: the degree is denied, maybe not the finding.
HEDGE = re.compile(
    r"\b(?:obvious(?:ly)?|significant(?:ly)?|definite(?:ly)?|clear(?:ly)?|apparent(?:ly)?|marked(?:ly)?|"
    r"evident(?:ly)?|remarkabl[ey]|pathologic(?:al)?(?:ly)?|special|abnormal(?:ly)?|acute|active|gross(?:ly)?|"
    r"substantial(?:ly)?|notabl[ey]|large|major)\b",
    re.I,
)
# ConText termination terms: a negation's scope ends there.
TERMINATION = re.compile(
    r"\b(?:but|however|although|though|whereas|except|apart from|aside from|which|yet|still|nevertheless|"
    r"while)\b",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.;:!?])\s+|\n+|(?<=[;!?])(?=\S)|\s+(?=\d+[.)]\s)")
_VERB = re.compile(r"\b(?:is|are|was|were|be|been|being|seen|found|shows?|showed|shown|can|could|has|have|had|"
                   r"noted|observed|detected|identified|located|measur\w*|appears?|visible)\b", re.I)
_OR = re.compile(r"\b(?:or|nor)\b", re.I)
_FINDING_VERB = re.compile(r"\b(?:is|are|was|were|been)\s+(?:\w+ly\s+)?(?:seen|found|observed|detected|noted|"
                           r"identified|visuali[sz]ed|demonstrated|present)\b")
_CONJ = re.compile(r"\b(?:or|and|nor)\b|,")


def normalize(text: str) -> str:
    """Lower case, hyphens between letters as spaces, line breaks kept; the length never changes."""
    text = str(text or "").replace("\r", "\n").lower()
    return re.sub(r"(?<=[a-z])[-/](?=[a-z])", " ", text)


def _spans(pattern: re.Pattern, text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Pieces of ``text[start:end]`` between the matches of ``pattern`` (stripped of spaces), as offsets."""
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, end))
    stripped = []
    for a, b in out:
        while a < b and text[a] in " \t,":
            a += 1
        while b > a and text[b - 1] in " \t":
            b -= 1
        if b > a:
            stripped.append((a, b))
    return stripped


def _list_item(part: str) -> bool:
    return len(part.split()) <= 3 and not _VERB.search(part) and not _OR.search(part)


def _clauses(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Comma clauses of a segment; a negated comma list closed by "or" / "nor", or by the verb of a listed subject,
    stays one clause."""
    parts = [p for p in _spans(re.compile(","), text, start, end)]
    if not parts:
        return []
    merged, i = [parts[0]], 1
    while i < len(parts):
        k = i
        while k < len(parts) and _list_item(text[parts[k][0]:parts[k][1]]):
            k += 1
        last = text[parts[k][0]:parts[k][1]] if k < len(parts) else ""
        head = text[merged[-1][0]:merged[-1][1]]
        # "no nodule, consolidation or mass"; "no mass, nodule, infiltration was detected" (a listed subject)
        closes = k < len(parts) and not last.startswith("and ") and (
            _OR.search(last) or k > i and _FINDING_VERB.search(last))
        if closes and (NEG_PRE.search(head) or NEG_POST.search(last) or NEG_PRE.search(last)):
            merged[-1] = (merged[-1][0], parts[k][1])
            i = k + 1
        else:
            merged.append(parts[i])
            i += 1
    return merged


@dataclass(frozen=True)
class Clause:
    """Offsets of a clause, of its segment (up to a termination term) and of its sentence in the text."""

    start: int
    end: int
    seg_start: int
    seg_end: int
    sent_start: int
    sent_end: int


class Document:
    """A normalised report split into sentences, segments and clauses, with mention status look-up."""

    def __init__(self, text: str):
        self.text = normalize(text)
        self.clauses: list[Clause] = []
        for s0, s1 in _spans(_SENTENCE, self.text, 0, len(self.text)):
            for g0, g1 in _spans(TERMINATION, self.text, s0, s1):
                for c0, c1 in _clauses(self.text, g0, g1):
                    self.clauses.append(Clause(c0, c1, g0, g1, s0, s1))
        self._starts = [c.start for c in self.clauses]

    def clause_at(self, pos: int) -> Clause | None:
        """The clause holding offset ``pos`` (None between clauses)."""
        i = bisect.bisect_right(self._starts, pos) - 1
        if i >= 0 and self.clauses[i].start <= pos < self.clauses[i].end:
            return self.clauses[i]
        return None

    def sentence(self, clause: Clause) -> str:
        return self.text[clause.sent_start:clause.sent_end]

    def status(self, start: int, end: int) -> str | None:
        """The :data:`STATUSES` value of the mention ``text[start:end]`` (None outside any clause)."""
        c = self.clause_at(start)
        if c is None:
            return None
        t = self.text
        before = _mask(t[c.start:end], PSEUDO_NEG)
        after = t[end:c.end]
        pre = list(NEG_PRE.finditer(before))
        cue = list(UNCERTAIN_PRE.finditer(t, c.start, start))
        # "no finding suggestive of X" is a negation; "X, possibly Y" leaves X affirmed
        if cue and not (pre and pre[-1].start() < cue[-1].start() - c.start) or UNCERTAIN_POST.search(after):
            return "unc"
        if pre:
            between = before[pre[-1].end():max(pre[-1].end(), start - c.start)]
            if HEDGE.search(between):
                return "neg_hedged"
            return "neg_conj" if _CONJ.search(between) else "neg"
        post = NEG_POST.search(after)
        if post:
            return "neg_hedged" if HEDGE.search(post.group(0)) or re.search(r"\w+ly\s", post.group(0)) else "neg"
        seg_before = _mask(t[c.seg_start:c.start], PSEUDO_NEG)
        if NEG_PRE.search(seg_before):
            return "neg_wide"
        return "pos"


def _mask(text: str, pattern: re.Pattern) -> str:
    """``text`` with the matches of ``pattern`` blanked out (same length)."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def split_sentences(text: str) -> list[str]:
    """Sentences of a report (normalised text)."""
    doc = Document(text)
    return [doc.text[a:b] for a, b in _spans(_SENTENCE, doc.text, 0, len(doc.text))]


def split_clauses(sentence: str) -> list[str]:
    """Clauses of one sentence (termination terms and commas end a negation's scope)."""
    doc = Document(sentence)
    return [doc.text[c.start:c.end] for c in doc.clauses]
