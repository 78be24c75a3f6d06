"""Rule-based report labeler for chest CT language (CheXpert-14 or CT-RATE-18), offline and dependency-free.

How a report is read:

1. split into sentences (``. ; : ! ?`` followed by a space, or a line break), each sentence into clauses
   (commas, "but", "however", "whereas", "although", "except");
2. every clause is searched for *mentions* of each class (regular expressions with CT synonyms, e.g. lung
   lesion <- nodule, mass, space-occupying, tumour...; pleural other <- pleural thickening/hypertrophy/
   adhesion/calcification...);
3. each mention gets a CheXbert-style code: 3 *uncertain* if the clause holds an uncertainty cue ("possible",
   "suggestive of", "may", "likely", "consider", "cannot be excluded", "?"...), else 2 *negative* if a negation
   cue precedes it in the clause ("no", "not", "without", "free of", "absence of", "negative for", "none"...)
   or a post-negation follows it ("... is not seen/found/enlarged", "... is normal"), else 1 *positive*;
4. a class takes its strongest code over the report: positive > uncertain > negative > blank;
5. "no finding" is 1 when no other class is positive or uncertain *and* no clause describes any other
   abnormality (a shadow, calcification, enlarged or thickened organ... outside the 13 classes too), else 0 --
   as CheXbert's 2-class head does on CTRG: it marks only entirely normal reports. The CheXpert hierarchy
   (a positive "cardiomegaly" also makes "enlarged cardiomediastinum" positive) is available with
   ``cardiomegaly_implies_ecm=True``; it is off by default because CT reports describe the mediastinum
   separately.

Lung-parenchyma classes (lesion, opacity, consolidation, atelectasis, pneumonia, pneumothorax) ignore
mentions whose clause names an organ outside the lungs (liver, kidney, breast, thyroid, brain...) and no lung
word, because CTRG reports also describe the head and abdomen -- except under ``chexbert_compat`` (below), since
CheXbert does not. Known limit (shared with CheXbert): CTRG's descriptive "patchy / flocculent fuzzy /
high-density shadows" are not mapped to a class; a "ground-glass nodule" is a lung lesion.

The labeler stands in for CheXbert offline, so by default (``chexbert_compat=True``) the CheXpert-14 classes
follow CheXbert's *consistent* reading of CT wording (:data:`CHEXBERT_PATTERNS`), which largely follows the
mention and "unmention" lists of the CheXpert labeler that produced CheXbert's training labels: "pleural
hypertrophy", "ground-glass shadow", an arc-shaped thoracic shadow and a stent are left blank, any "tube" is a
device, only the word "fracture" is a fracture, "calcified nodule" and "massive" are no lesion, lesion words count
in any organ, any un-negated "mediastinum", a calcified aorta and "no (mass or) obviously enlarged mediastinal lymph
nodes" are enlarged cardiomediastinum...; ``chexbert_compat=False`` reads the words literally. On the 180
CheXbert-labelled CTRG-Chest dev reports this gives micro-F1 0.85 (literal reading 0.77); about a third of the
remaining disagreements are CheXbert labelling word-for-word identical sentences both ways (e.g. "The shape of
heart shadow and large vessels is normal, and no mass or enlarged lymph node is found in mediastinum": enlarged
cardiomediastinum in 13 reports, not in 33), which no rule can follow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..configuration_dia_llama import CHEXPERT_14, CT_RATE_18
from . import BLANK, NEGATIVE, POSITIVE, UNCERTAIN, LabelerOutput

# --------------------------------------------------------------------------------------------- cues
_UNCERTAIN = re.compile(
    r"\?|\b(?:possibl[ey]|probabl[ey]|likely|suspect\w*|suspicious|suggestive|suggest(?:s|ing|ed)?|"
    r"(?:may|might|could)(?! be (?:seen|found|observed|noted|visible))|consider(?:ed|ing)?|questionabl[ey]|"
    r"uncertain|indeterminate|equivocal|doubtful|query|seems?|"
    r"appears? to|tends? to|cannot be (?:excluded|ruled out)|can ?not be (?:excluded|ruled out)|"
    r"not (?:be )?(?:excluded|ruled out)|to be (?:excluded|ruled out)|differential)\b",
    re.I,
)
_NEG_PRE = re.compile(
    r"\b(?:no|not|without|none|neither|nor|never|absence of|absent|free of|negative for|rules? out|"
    r"ruled out|resolution of)\b",
    re.I,
)
_NEG_POST = re.compile(
    r"\b(?:(?:is|are|was|were|has|have|been)\s+)?not\s+(?:been\s+|be\s+)?(?:clearly\s+|obviously\s+|"
    r"significantly\s+)?(?:seen|found|observed|detected|shown|visible|visualized|identified|noted|present|"
    r"obvious|clear|evident|significant|enlarged|large|larger|big|increased|thickened|dilated|widened)\b"
    r"|\b(?:is|are|was|were)\s+(?:absent|(?:basically\s+|roughly\s+)?normal)\b"
    r"|\b(?:disappeared|resolved|no longer)\b",
    re.I,
)
_LUNG_WORDS = re.compile(r"\b(?:lungs?|pulmonary|bronch\w*|pleura\w*|subpleural|lingula\w*|tongue segment|"
                         r"hil(?:um|ar|i|us)|lobes? of (?:the )?(?:left|right|both)|alveol\w*|interlobular)\b", re.I)
_OTHER_ORGANS = re.compile(
    r"\b(?:liver|hepat\w*|kidneys?|renal|spleen|splenic|pancrea\w*|gall ?bladder|bile|biliary|thyroid|breasts?|"
    r"mammary|brain|cerebr\w*|cerebell\w*|basal ganglia|ventric\w*|intracranial|cranial|skull|sinus\w*|"
    r"nasopharyn\w*|pharyn\w*|laryn\w*|neck|axilla\w*|armpits?|supraclavicular|adrenal|esophag\w*|oesophag\w*|"
    r"stomach|gastric|bowel|intestin\w*|colon|rect\w*|abdom\w*|peritone\w*|retroperitone\w*|pelvi\w*|bladder|"
    r"uter\w*|ovar\w*|prostat\w*|vertebra\w*|spine|spinal|ribs?|bones?|sternum|muscles?|skin|subcutaneous|"
    r"chest wall|parotid|orbit\w*|mediastin\w*|heart|cardiac|pericard\w*|aort\w*|sellar|suprasellar|frontal|"
    r"parietal|temporal|occipital|masseter|jaw|mandib\w*|maxill\w*|ethmoid|scalp|gluteal|hip|femur|"
    r"lymph nodes?)\b",
    re.I,
)
# Any other abnormal description (CT wording); "no finding" needs none of them un-negated in the report.
_ABNORMAL = re.compile(
    r"\b(?<!heart )(?<!cardiac )(?<!hilar )(?<!hilum )(?<!hili )shadows?\b|\bimages?\b"
    r"|\b(?:low|high|higher|lower|mixed|dense|soft tissue)[- ]density\b|\bdensity\s+(?:is\s+|was\s+)?"
    r"(?:increas\w*|decreas\w*|reduc\w*|uneven|inhomogeneous)|\buneven\b|\binhomogeneous\b"
    r"|\b(?:increas\w*|decreas\w*|reduc\w*)\b|\bcalcif\w*|\blesions?\b|\bcyst\w*|\bfoc(?:us|i|al)\b"
    r"|\bthick\w*|\bhypertroph\w*|\benlarg\w*|\bswell\w*|\bswollen\b|\bdilat\w*|\bwiden\w*|\bexpan\w*"
    r"|\bstrips?\b|\bstripes?\b|\bstreak\w*|\bcords?\b|\bbands?\b|\bbubbles?\b|\bbulla\w*|\blucen\w*"
    r"|\btransparent\s+(?:area|shadow|zone)s?|\bdisorder\w*|\bfuzzy\b|\bblurr?\w*|\bvague\b|\btwist\w*"
    r"|\bdeform\w*|\bstenos\w*|\bnarrow\w*|\bcompress\w*|\babnormal\w*|\blymph\s*nodes?\b|\boperat\w*"
    r"|\bpostoperative\b|\bsurg\w*|\bresect\w*|\bstones?\b|\bcalcul\w*|\batroph\w*|\beffusion\w*"
    r"|\bhemorrhag\w*|\bhaemorrhag\w*|\bgas\b|\bpneumatosis\b|\bshift\w*|\bdeviat\w*|\bemphysema\w*"
    r"|\bnodul\w*|\bmass\w*|\bfibro\w*|\bgrid\b|\breticul\w*|\bplaques?\b|\bhernia\w*"
    r"|\binterrupt\w*|\bdiscontinu\w*|\bbroken\b|\bdislocat\w*",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.;:!?])\s+|\n+|(?<=[;!?])(?=\S)")
_CONTRAST = re.compile(r"\b(?:but|however|whereas|although|though|except)\b", re.I)
_VERB = re.compile(r"\b(?:is|are|was|were|be|been|being|seen|found|shows?|showed|shown|can|could|has|have|had|"
                   r"noted|observed|detected|identified|located|measur\w*|appears?|visible)\b", re.I)
_OR = re.compile(r"\b(?:or|nor)\b", re.I)

_CODE_RANK = {BLANK: 0, NEGATIVE: 1, UNCERTAIN: 2, POSITIVE: 3}

# ------------------------------------------------------------------------------------- CheXpert-14
_ENL = r"(?:enlarg\w*|larger|large|big|bigger|increased|swollen|swelling|widen\w*|broaden\w*)"
_DEG = r"(?:(?:slightly|mildly|markedly|significantly|obviously|moderately|clearly|generally)\s+)?"
# "pleura pulled / retracted / indented / depressed", "pleural traction" describe a lung tumour's sign (pleural
# indentation), not a pleural disease: they are not "pleural other".
_PLEURA_ABN = r"(?:thick\w*|hypertroph\w*|adhesi\w*|calcif\w*|plaques?|fibros\w*)"

CHEXPERT_PATTERNS: dict[str, list[str]] = {
    "enlarged cardiomediastinum": [
        r"\b(?:widen\w*|enlarg\w*|broaden\w*)\s+(?:of\s+(?:the\s+)?)?(?:superior\s+)?mediastin\w*",
        r"\bmediastin\w*\s+(?:is\s+|was\s+)?" + _DEG + r"(?:widen\w*|enlarg\w*|broaden\w*)",
        r"\bcardiomediastinal\s+(?:silhouette|shadow|contour)\w*\s+(?:is\s+)?" + _DEG + _ENL,
        # lymph nodes / masses reported in the mediastinum (either order in the clause)
        r"\blymph\s*nodes?\b(?=.*\bmediastin)",
        r"\bmediastin\w*\b(?:(?!\blymph).)*\blymph\s*nodes?\b",
        r"\b(?:mass\w*|tumou?r\w*|space[- ]occupying|soft tissue (?:density )?(?:mass|shadow)s?|lump\w*)\b"
        r"(?=.*\b(?:in|of) (?:the )?(?:\w+ ){0,2}mediastin)",
        r"\bmediastinal\s+(?:mass|tumou?r|lymphadenopathy|adenopathy)\w*",
        r"\baort\w*(?:\s+\w+){0,4}?\s+(?:is\s+|was\s+)?" + _DEG +
        r"(?:dilat\w*|widen\w*|enlarg\w*|tortu\w*|aneurysm\w*|ectasi\w*|prominent)",
        r"\baort\w*\s+(?:\w+\s+){0,2}?aneurysm\w*|\baneurysm\w*\s+of\s+(?:the\s+)?(?:\w+\s+)?aort\w*",
    ],
    "cardiomegaly": [
        r"\bcardiomegaly\b",
        r"\b(?:cardiac|heart)\s+enlargement\b",
        r"\benlargement\s+of\s+(?:the\s+)?(?:heart|cardiac)",
        r"\benlarged\s+(?:heart|cardiac)\b",
        r"\b(?:heart|cardiac)(?:\s+(?:shadow|silhouette|size|contour|volume))?(?:\s+(?:is|was|are|were))?"
        r"(?:\s+not)?\s+" + _DEG + r"(?:enlarg\w*|larger|large|big|bigger|increased)\b(?!\s+(?:blood\s+)?vessel)",
        r"\bshape of (?:the )?(?:heart|cardiac) shadow is enlarged",
    ],
    "lung opacity": [
        r"\bopacit\w*",
        r"\binfiltrat\w*",
        r"\bground[- ]glass(?:[- ]like)?\s+(?:(?!nodul)\w+\s+)?(?:shadow|density|densities|opacit\w*|change|"
        r"attenuation|area|patch|lesion|infiltrat\w*)\w*",
        r"\bhaz(?:y|iness)\b",
    ],
    "lung lesion": [
        r"\bnodul\w*",
        r"\bmass(?:es|ive|like)?\b",
        r"\bspace[- ]occupying\b",
        r"\btumou?r\w*",
        r"\bneoplas\w*",
        r"\bcarcinoma\w*",
        r"\bcancer\w*",
        r"\bmetasta\w*",
        r"\blump\w*",
        r"\bgranuloma\w*",
    ],
    "edema": [r"\b(?:o)?edema\w*", r"\b(?:pulmonary|lung)\s+congestion\b"],
    "consolidation": [r"\bconsolidat\w*", r"\bair[- ]bronchogram\w*"],
    "pneumonia": [r"\bpneumon\w*", r"\bbronchopneumon\w*", r"\binflammat\w*", r"\binfect\w*"],
    "atelectasis": [
        r"\batelecta\w*",
        r"\b(?:lung|lobe|lobar|pulmonary|segment\w*)\s+(?:\w+\s+){0,2}collaps\w*",
        r"\bcollaps\w*\s+of\s+(?:the\s+)?(?:\w+\s+){0,3}(?:lung|lobe)\b",
        r"\b(?:incomplete|insufficient|poor)\s+(?:re-?)?expansion\b",
    ],
    "pneumothorax": [
        r"\b(?:hydro)?pneumothora\w*",
        r"\b(?:pulmonary|lung)\s+compression\s+(?:zone|band|line)s?\b",
        r"\b(?:gas|air)\s+(?:accumulation\s+|collection\s+)?in\s+(?:the\s+)?(?:\w+\s+)?(?:pleural|thoracic)\s+cavit\w*",
    ],
    "pleural effusion": [
        r"\bpleural\s+effusion\w*",
        r"\bhydrothorax\b",
        r"\bpleural\s+(?:or|and|and/or)\s+pericardial\s+effusion\w*",
        r"\b(?:pleural|thoracic|chest)\s+(?:cavity\s+)?(?:fluid|liquid)\b",
        r"\beffusion\w*\b(?=(?:(?!pericard).)*\b(?:thoracic|pleural|chest)\s+cavit)",
        r"\b(?:thoracic|pleural|chest)\s+cavit\w*\b(?:(?!pericard).)*\beffusion",
        r"\bencapsulated\s+effusion\b",
        r"\b(?:arc|crescent)\w*[- ]?(?:shaped\s+|like\s+)?(?:\w+\s+){0,3}(?:low[- ]density|liquid|fluid|water)"
        r"[\w\s-]{0,20}?shadows?\b(?=.*\b(?:thoracic|pleural|chest)\s+cavit)",
    ],
    "pleural other": [
        r"\bpleura\w*\s+(?:\w+\s+){0,2}?" + _PLEURA_ABN,
        r"\bpleura(?:l)?\b(?:(?!effusion|\bno\b|\bnot\b)[\w ]){0,40}?\b(?:is|are|was|were)\s+" + _DEG +
        r"(?:locally\s+)?" + _PLEURA_ABN,
        r"\b(?:thick\w*|hypertroph\w*|adhesion\w*|calcification\w*)\s+(?:and\s+\w+\s+)?of\s+(?:the\s+)?"
        r"(?:\w+\s+){0,2}pleura\w*",
        r"\b(?:local|focal|bilateral|left|right)\s+pleural\s+(?:\w+\s+)?" + _PLEURA_ABN,
        r"\bfibrothorax\b",
    ],
    "fracture": [
        r"\bfractur\w*",
        r"\bbroken\s+ends?\b",
        r"\b(?:cortex|cortical|bone)\w*\s+(?:\w+\s+){0,2}(?:is\s+|are\s+|was\s+)?(?:interrupt\w*|discontinu\w*|broken)",
    ],
    "support devices": [
        r"\bpacemaker\w*",
        r"\bcatheter\w*",
        r"\bstents?\b",
        r"\b(?:endotracheal|tracheal|tracheostomy|chest|drainage|nasogastric|gastric|feeding|thoracostomy|"
        r"jejunal)\s+tubes?\b",
        r"\bintubat\w*",
        r"\bdrain(?:s|age)?\b",
        r"\binternal\s+fixation\b",
        r"\bfixation\s+(?:device|plate|screw|nail|material)\w*",
        r"\bprosthe\w*",
        r"\b(?:metal|metallic)\s+(?:\w+\s+){0,2}(?:shadow|density|implant|clip|wire|material|plate|screw)s?\b",
        r"\bsternotomy\s+wires?\b",
        r"\b(?:surgical|vascular)\s+clips?\b",
        r"\bsutures?\b",
        r"\banastomo\w*",
        r"\bport[- ]a[- ]cath\b|\binfusion\s+port\b",
        r"\bcannula\w*",
        r"\belectrodes?\b",
        r"\bimplant\w*",
        r"\bvalve\s+replacement\b|\bartificial\s+(?:valve|joint|intubation)\w*",
        r"\bembolization\s+coils?\b",
    ],
}

_CHEXPERT_NEGATIVE_ONLY: dict[str, list[str]] = {
    # statements of normality that CheXbert reads as a negative mention
    "cardiomegaly": [r"\b(?:shape|morphology|size|contour)\s+of\s+(?:the\s+)?(?:\w+\s+)?(?:heart|cardiac)\b.*\bnormal",
                     r"\b(?:heart|cardiac)\s+(?:shadow\s+|size\s+|silhouette\s+|contour\s+)?(?:is\s+|was\s+)?"
                     r"(?:within\s+)?(?:normal|not enlarged)\b",
                     r"\bnormal\s+(?:shape|morphology|size)\s+of\s+(?:the\s+)?(?:heart|cardiac)"],
}

# ------------------------------------------------------------------------ CheXbert's reading (CheXpert-14)
# CheXbert (trained on chest X-ray reports) reads some CT wording consistently in its own way; with
# ``chexbert_compat=True`` (default) the CheXpert-14 rules follow it, so that the labeler stands in for CheXbert.
# Each rule below was checked on CTRG-Chest reports labelled by CheXbert (counts: CheXbert-positive / mentions).
_PLEURA_ABN_CB = r"(?:thick\w*|adhesi\w*|calcif\w*|plaques?|fibros\w*)"
_CHEXBERT_LESION_WORDS = {r"\bnodul\w*": r"(?<!calcified )\bnodul\w*",
                          r"\bmass(?:es|ive|like)?\b": r"\bmass(?:es|like)?\b"}
CHEXBERT_PATTERNS: dict[str, list[str]] = {
    **CHEXPERT_PATTERNS,
    # "pleural hypertrophy" is no CheXpert word: CheXbert mostly leaves it blank (4 / 15: thickening, adhesion and
    # calcification do count)
    "pleural other": [p.replace(_PLEURA_ABN, _PLEURA_ABN_CB).replace(r"hypertroph\w*|", "")
                      for p in CHEXPERT_PATTERNS["pleural other"]],
    # calcified / plaque-laden aorta or great vessels count as a cardiomediastinal finding (3 / 3; coronary-only
    # calcification does not: 0 / 2), as do a tortuous or dilated aorta (rules above); and, as in the CheXpert
    # labeler's mention list, any un-negated "mediastinum" is a mention ("trachea mediastinum in the middle": 6 / 6,
    # "a round shadow in the front mediastinum")
    "enlarged cardiomediastinum": CHEXPERT_PATTERNS["enlarged cardiomediastinum"] + [
        r"\b(?:aort\w*|(?:large|great|big)\s+(?:blood\s+)?vessels?)(?:\s+\w+){0,2}?\s+(?:(?:is|are|was|were)\s+)?"
        r"(?:calcif\w*|atherosclero\w*|plaques?)",
        r"\b(?:calcif\w*|atherosclero\w*|plaques?)\s+(?:\w+\s+){0,4}?(?:of|in|on)\s+(?:the\s+)?"
        r"(?:[\w-]+\s+){0,4}?(?:aort\w*|(?:large|great|big)\s+(?:blood\s+)?vessels?)\b",
        r"\bmediastinum\b",
    ],
    # only the words "effusion" / "pleural fluid" (the CheXpert mentions): a described arc-shaped low-density
    # shadow in the thoracic cavity is left blank (0 / 2)
    "pleural effusion": [p for p in CHEXPERT_PATTERNS["pleural effusion"] if "arc|crescent" not in p],
    # CT's "ground-glass shadow / changes" is not read as lung opacity (1 / 6); the word "opacity" is
    "lung opacity": [r"\bopacit\w*", r"\binfiltrat\w*", r"\bhaz(?:y|iness)\b"],
    # "calcified nodule" and "massive" are no lesion mentions (CheXpert labeler "unmentions"; reports whose only
    # lesion words they are: 0 / 2 and 0 / 1), whereas a "nodular calcification" is (2 / 2)
    "lung lesion": [_CHEXBERT_LESION_WORDS.get(p, p) for p in CHEXPERT_PATTERNS["lung lesion"]],
    # only the word: a "pulmonary compression zone" or gas in the pleural cavity is left blank (0 / 1)
    "pneumothorax": [r"\b(?:hydro)?pneumothora\w*"],
    # a bare "collapse" (thorax, vertebra) is atelectasis to CheXbert, as in the CheXpert labeler's mention list (2 / 2)
    "atelectasis": CHEXPERT_PATTERNS["atelectasis"] + [r"\bcollaps\w*"],
    # only the word "fracture": a described cortical interruption / broken end is left blank (0 / 5)
    "fracture": [r"\bfractur\w*"],
    # any "tube" (bronchial tube wall, Eustachian tube) is a device to CheXbert (5 / 6): chest X-ray reports'
    # "tube" is nearly always an endotracheal / chest / feeding tube; a stent, suture or internal fixation -- words the
    # CheXpert labeler's device list lacks -- is left blank (0 / 3)
    "support devices": [p for p in CHEXPERT_PATTERNS["support devices"]
                        if not re.search(r"stent|suture|fixation", p)] + [r"\btubes?\b"],
}
# Mentions CheXbert reads as present even under a negation, each with whether a statement of normality elsewhere in
# the sentence ("the shape of the heart shadow is normal, and ...") keeps it from being read so:
# - "no (mass or) obvious(ly) enlarged lymph nodes in the mediastinum": the hedge on the enlargement is not taken as
#   its negation (9 / 9);
# - "no mass or enlarged lymph node ... in the mediastinum": the "no" is read as bearing on the mass only (6 / 7), but
#   not after a statement of normality (18 / 56); "no obvious mass or enlarged lymph node", where the hedge bears on
#   the mass, is mostly not positive either (8 / 86).
_CHEXBERT_PRESENT_DESPITE_NEGATION: dict[str, list[tuple[str, bool]]] = {
    "enlarged cardiomediastinum": [
        (r"\bobvious(?:ly)?\s+(?:enlarged|swollen)\s+lymph\s*nodes?\b(?=.*\bmediastin)", False),
        (r"\bno\s+mass(?:es)?\s+(?:or|and)\s+enlarged\s+lymph\s*nodes?\b(?=.*\bmediastin)", True),
    ],
}
_NORMAL = re.compile(r"\bnormal\b", re.I)
# -------------------------------------------------------------------------------------- CT-RATE-18
CTRATE_PATTERNS: dict[str, list[str]] = {
    "medical material": CHEXPERT_PATTERNS["support devices"] + [
        r"\b(?:surgical|medical|foreign)\s+material\w*", r"\bclips?\b", r"\bwires?\b", r"\bcoils?\b",
        r"\bvalve\s+prosthesis\b", r"\bicd\b",
    ],
    "arterial wall calcification": [
        r"(?<!coronary )\b(?:arterial|aortic|aorta|vascular|carotid|vessel)\s+(?:\w+\s+){0,2}?(?:wall\s+)?"
        r"(?:calcif\w*|atherosclero\w*|atheroma\w*|plaques?)",
        r"\b(?:calcif\w*|atherosclero\w*|atheroma\w*)\s+(?:\w+\s+){0,4}?(?:in|of|on|along)\s+"
        r"(?:[\w-]+\s+){0,5}?(?<!coronary )(?:aort\w*|arter(?:y|ies|ial)|vessels?|vascular)\b",
    ],
    "cardiomegaly": CHEXPERT_PATTERNS["cardiomegaly"],
    "pericardial effusion": [
        r"\bpericardial\s+(?:effusion|fluid)\w*",
        r"\beffusion\w*\s+(?:\w+\s+){0,3}pericard\w*",
        r"\bpericardi\w*\s+(?:\w+\s+){0,3}effusion\w*",
        r"\bpericardial\s+thickening[- ]effusion\b",
    ],
    "coronary artery wall calcification": [
        r"\bcoronar\w*\s+(?:\w+\s+){0,3}?(?:calcif\w*|atherosclero\w*|plaques?)",
        r"\b(?:calcif\w*|atherosclero\w*|plaques?)\s+(?:\w+\s+){0,6}?coronar\w*",
    ],
    "hiatal hernia": [r"\bhiat(?:al|us)\s+hernia\w*", r"\bhernia\w*\s+(?:\w+\s+){0,3}hiatus\b"],
    "lymphadenopathy": [
        r"\blymphadenopath\w*", r"\badenopath\w*",
        r"\b(?:enlarged|pathologic\w*|swollen|increased)\s+(?:\w+\s+){0,2}lymph\s*nodes?\b",
        r"\blymph\s*nodes?\s+(?:\w+\s+){0,6}?(?:is|are|was|were)?\s*" + _DEG + r"(?:enlarg\w*|pathologic\w*|swollen)",
        r"\blymph\s*nodes?\b(?=.*\bshort axis\b)",
    ],
    "emphysema": [r"\bemphysema\w*", r"\bbulla[es]?\b", r"\bbullous\b", r"\bblebs?\b"],
    "atelectasis": CHEXPERT_PATTERNS["atelectasis"] + [r"\batelectatic\b"],
    "lung nodule": [r"\bnodul\w*", r"\bmicronodul\w*"],
    "lung opacity": CHEXPERT_PATTERNS["lung opacity"] + [r"\b(?:increased|density)\s+(?:increase|density)\b"],
    "pulmonary fibrotic sequela": [
        r"\bfibro\w*", r"\bsequela\w*", r"\bscar\w*", r"\bparenchymal\s+bands?\b", r"\bfibrous\b",
    ],
    "pleural effusion": CHEXPERT_PATTERNS["pleural effusion"],
    "mosaic attenuation pattern": [r"\bmosaic\w*"],
    "peribronchial thickening": [
        r"\bperibronchi\w*\s+(?:\w+\s+){0,2}thicken\w*",
        r"\bbronch\w*\s+wall\w*\s+(?:\w+\s+){0,2}thicken\w*",
        r"\bthicken\w*\s+(?:of\s+)?(?:the\s+)?(?:peri)?bronch\w*\s+wall\w*",
        r"\bperibronchial\b",
    ],
    "consolidation": CHEXPERT_PATTERNS["consolidation"],
    "bronchiectasis": [
        r"\bbronchiecta\w*",
        r"\b(?:dilat\w*|ectatic)\s+bronch\w*",
        r"\bbronch\w*\s+(?:\w+\s+){0,3}?(?:dilat\w*|ectasi\w*)",
    ],
    "interlobular septal thickening": [
        r"\b(?:interlobular\s+)?septal\s+thicken\w*",
        r"\bthicken\w*\s+(?:of\s+)?(?:the\s+)?(?:interlobular\s+)?sept\w*",
        r"\binterlobular\s+sept\w*\s+(?:\w+\s+){0,3}?thick\w*",
    ],
}

_CTRATE_NEGATIVE_ONLY = {"cardiomegaly": _CHEXPERT_NEGATIVE_ONLY["cardiomegaly"]}

_LUNG_CLASSES = {"lung lesion", "lung opacity", "consolidation", "atelectasis", "pneumonia", "pneumothorax",
                 "lung nodule", "emphysema", "pulmonary fibrotic sequela", "mosaic attenuation pattern",
                 "bronchiectasis", "interlobular septal thickening"}

RULE_SETS = {
    "chexpert14": (CHEXPERT_14, CHEXPERT_PATTERNS, _CHEXPERT_NEGATIVE_ONLY),
    "ctrate18": (CT_RATE_18, CTRATE_PATTERNS, _CTRATE_NEGATIVE_ONLY),
}


# ------------------------------------------------------------------------------------------ helpers
def split_sentences(text: str) -> list[str]:
    """Sentences of a report: split after ``. ; : ! ?`` + space or at line breaks (``1.2cm`` stays whole)."""
    text = " ".join(str(text or "").replace("\r", "\n").split(" "))
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _list_item(part: str) -> bool:
    return len(part.split()) <= 3 and not _VERB.search(part) and not _OR.search(part)


def split_clauses(sentence: str) -> list[str]:
    """Clauses of a sentence: commas and contrast words ("but", "however"...) end a negation's scope.

    A comma list closed by "or"/"nor" stays one clause when negated ("no nodule, consolidation or mass";
    "nodule, mass or cyst is not seen"), while CTRG's "No pleural effusion, bilateral pleural thickening"
    keeps its two clauses.
    """
    clauses = []
    for segment in _CONTRAST.split(sentence):
        parts = [p.strip() for p in segment.split(",") if p.strip()]
        if not parts:
            continue
        merged, i = [parts[0]], 1
        while i < len(parts):
            k = i
            while k < len(parts) and _list_item(parts[k]):
                k += 1
            closes = k < len(parts) and _OR.search(parts[k]) and not parts[k].lower().startswith("and ")
            if closes and (_NEG_PRE.search(merged[-1]) or _NEG_POST.search(parts[k]) or _NEG_PRE.search(parts[k])):
                merged[-1] = ", ".join([merged[-1], *parts[i:k + 1]])
                i = k + 1
            else:
                merged.append(parts[i])
                i += 1
        clauses.extend(merged)
    return clauses


def mention_code(clause: str, start: int, end: int) -> int:
    """CheXbert code of the mention ``clause[start:end]``: 3 uncertain, 2 negated or 1 positive."""
    if _UNCERTAIN.search(clause):
        return UNCERTAIN
    if _NEG_PRE.search(clause[:end]):
        return NEGATIVE
    if _NEG_POST.search(clause[end:]):
        return NEGATIVE
    return POSITIVE


def _outside_lung(clause: str, sentence: str) -> bool:
    for context in (clause, sentence):
        if _LUNG_WORDS.search(context):
            return False
        if _OTHER_ORGANS.search(context):
            return True
    return False


class RuleLabeler:
    """Rule-based labeler (see the module doc).

    ``disease_set``: ``"chexpert14"`` (default), ``"ctrate18"``, or a list of class names from either set
    (e.g. the findings of a synthetic benchmark; "no finding" is then computed over the listed classes).
    ``lung_location_filter``: ignore lung-class mentions located in other organs (module doc); ``None`` (default):
    on, except for the CheXpert-14 classes under ``chexbert_compat`` -- CheXbert, like the CheXpert labeler's
    anatomy-free mention lists, reads a nodule or cancer anywhere as a lung lesion and a vertebral collapse as
    atelectasis (6 of the 8 dev reports where the filter matters).
    ``cardiomegaly_implies_ecm``: apply the CheXpert hierarchy cardiomegaly -> enlarged cardiomediastinum.
    ``chexbert_compat``: CheXpert-14 classes follow CheXbert's consistent reading of CT wording
    (:data:`CHEXBERT_PATTERNS`: no "pleural hypertrophy", any "tube" is a device...); ``False`` reads the words
    literally (:data:`CHEXPERT_PATTERNS`). CT-RATE-18 classes are not affected.
    """

    def __init__(self, disease_set="chexpert14", lung_location_filter: bool | None = None,
                 cardiomegaly_implies_ecm: bool = False, chexbert_compat: bool = True):
        if isinstance(disease_set, str):
            if disease_set not in RULE_SETS:
                raise ValueError(f"unknown disease_set {disease_set!r}; choose one of {sorted(RULE_SETS)} or a list")
            names = list(RULE_SETS[disease_set][0])
        else:
            names = [str(n).strip().lower() for n in disease_set]
            named = [k for k, (ns, _, _) in RULE_SETS.items() if ns == names]
            disease_set = named[0] if named else "custom"
        chexpert = CHEXBERT_PATTERNS if chexbert_compat else CHEXPERT_PATTERNS
        known = {**CTRATE_PATTERNS, **chexpert}  # CheXpert wording first where both sets have a class
        patterns = CTRATE_PATTERNS if disease_set == "ctrate18" else known
        unknown = [n for n in names if n not in patterns and n != "no finding"]
        if unknown or not names:
            raise ValueError(f"the rule labeler has no rules for {unknown or names}; known: {sorted(known)}")
        negative_only = _CTRATE_NEGATIVE_ONLY if disease_set == "ctrate18" else _CHEXPERT_NEGATIVE_ONLY
        self.disease_set = disease_set
        self.name = "rule-ctrate18" if disease_set == "ctrate18" else "rule"
        self.disease_names = names
        self.cardiomegaly_implies_ecm = cardiomegaly_implies_ecm
        self.chexbert_compat = chexbert_compat and disease_set != "ctrate18"
        self.lung_location_filter = not self.chexbert_compat if lung_location_filter is None else lung_location_filter
        anywhere = set(CHEXBERT_PATTERNS) if self.chexbert_compat and lung_location_filter is None else set()
        self._location_filtered = {c for c in names if c in _LUNG_CLASSES and c not in anywhere}
        self._patterns = {c: [re.compile(p, re.I) for p in patterns[c]] for c in names if c != "no finding"}
        self._negative_only = {c: [re.compile(p, re.I) for p in ps] for c, ps in negative_only.items() if c in names}
        despite = _CHEXBERT_PRESENT_DESPITE_NEGATION if self.chexbert_compat else {}
        self._present_despite_negation = {c: [(re.compile(p, re.I), u) for p, u in ps]
                                          for c, ps in despite.items() if c in names}

    # --------------------------------------------------------------------------------------- core
    def mentions(self, text: str) -> list[tuple[str, int, str, str]]:
        """Every mention as ``(class, code, matched text, clause)`` -- useful to see why a label was given."""
        found = []
        for sentence in split_sentences(text):
            for clause in split_clauses(sentence):
                for cls, regexes in self._patterns.items():
                    for rx in regexes:
                        for m in rx.finditer(clause):
                            if cls in self._location_filtered and _outside_lung(clause, sentence):
                                continue
                            found.append((cls, mention_code(clause, m.start(), m.end()), m.group(0), clause))
                for cls, regexes in self._negative_only.items():
                    if any(rx.search(clause) for rx in regexes):
                        found.append((cls, NEGATIVE, "", clause))
                for cls, rules in self._present_despite_negation.items():
                    for rx, unless_normal in rules:
                        if unless_normal and _NORMAL.search(sentence):
                            continue
                        for m in rx.finditer(clause):
                            code = UNCERTAIN if _UNCERTAIN.search(clause) else POSITIVE
                            found.append((cls, code, m.group(0), clause))
        return found

    @staticmethod
    def has_abnormality(text: str) -> bool:
        """Whether any clause describes something abnormal (not negated), whatever the class."""
        for sentence in split_sentences(text):
            for clause in split_clauses(sentence):
                for m in _ABNORMAL.finditer(clause):
                    if mention_code(clause, m.start(), m.end()) != NEGATIVE:
                        return True
        return False

    def label_one(self, text: str) -> np.ndarray:
        """CheXbert-style codes (L,) of one report."""
        index = {c: i for i, c in enumerate(self.disease_names)}
        codes = np.zeros(len(self.disease_names), dtype=np.int64)
        for cls, code, _, _ in self.mentions(text):
            i = index[cls]
            if _CODE_RANK[code] > _CODE_RANK[int(codes[i])]:
                codes[i] = code
        ec, cm = index.get("enlarged cardiomediastinum"), index.get("cardiomegaly")
        if self.cardiomegaly_implies_ecm and ec is not None and cm is not None:
            if codes[cm] in (POSITIVE, UNCERTAIN) and _CODE_RANK[int(codes[cm])] > _CODE_RANK[int(codes[ec])]:
                codes[ec] = codes[cm]
        if "no finding" in index:
            others = [i for c, i in index.items() if c != "no finding"]
            normal = not np.isin(codes[others], (POSITIVE, UNCERTAIN)).any() and not self.has_abnormality(text)
            codes[index["no finding"]] = POSITIVE if normal else BLANK
        return codes

    def label(self, texts: Sequence[str]) -> LabelerOutput:
        """Label reports -> :class:`LabelerOutput` with ``present`` (code 1) and the 4-state ``codes``."""
        if isinstance(texts, str):
            texts = [texts]
        codes = np.stack([self.label_one(t) for t in texts]) if len(texts) else \
            np.zeros((0, len(self.disease_names)), dtype=np.int64)
        return LabelerOutput(present=(codes == POSITIVE).astype(np.int64), codes=codes,
                             disease_names=list(self.disease_names), labeler=self.name)

    __call__ = label


# -------------------------------------------------------------------------------------- agreement
def agreement_table(reference_codes, predicted_codes, names: Sequence[str], reference_name: str = "CheXbert",
                    digits: int = 2) -> str:
    """Markdown table of per-class P/R/F1/support of ``predicted`` vs ``reference`` present (code 1) labels,
    with micro and macro rows (support = reference positives; a class nobody marks present shows 0s)."""
    from ..evaluation.metrics import clinical_efficacy

    ce = clinical_efficacy(np.asarray(reference_codes) == 1, np.asarray(predicted_codes) == 1, names)
    f = f"{{:.{digits}f}}"
    lines = [f"| class | precision | recall | F1 | support ({reference_name}) | predicted |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in ce["per_class"].items():
        lines.append(f"| {name} | {f.format(row['precision'])} | {f.format(row['recall'])} | {f.format(row['f1'])} "
                     f"| {row['support']} | {row['predicted']} |")
    total_support = sum(r["support"] for r in ce["per_class"].values())
    total_pred = sum(r["predicted"] for r in ce["per_class"].values())
    for key in ("micro", "macro"):
        row = ce[key]
        lines.append(f"| **{key}** | {f.format(row['precision'])} | {f.format(row['recall'])} | "
                     f"{f.format(row['f1'])} | {total_support} | {total_pred} |")
    return "\n".join(lines)
