"""Concept vocabularies of the labeler classes: medical synonyms, not phrases mined from the evaluation reports.

Each class has a few named *concepts* (a regular expression over normalised text: lower case, hyphens as spaces)
and a flag saying whether an affirmed mention of the concept alone means the finding in the plain, generic reading
(the *prior* rule the fitted decision layer starts from). Sources:

* CheXpert-14: the CheXpert labeler's mention and "unmention" phrase lists (stanfordmlgroup/chexpert-labeler,
  ``phrases/``, MIT licence) -- the lists that labelled CheXbert's training data -- plus CT synonyms of general
  radiology (Fleischner Society glossary; the "shadow" / "space-occupying lesion" / "hypertrophy" wording of
  English-translated Chinese CT reports) as separate, non-prior concepts whose weight is left to the fit;
* CT-RATE-18: the Fleischner Society glossary terms of each finding and standard report wording ("increase in
  thickness" for thickening, "density increase" for opacity, "cardiothoracic index" for ratio).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_W = r"(?:[\w.]+\s+)"  # one word


@dataclass(frozen=True)
class Concept:
    """A named synonym set; ``prior``: an affirmed mention means the finding in the generic reading."""

    name: str
    pattern: str
    prior: bool = False

    @property
    def regex(self) -> re.Pattern:
        return _compiled(self.pattern)


_CACHE: dict[str, re.Pattern] = {}


def _compiled(pattern: str) -> re.Pattern:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern)
    return _CACHE[pattern]


def _near(a: str, b: str, words: int = 4) -> str:
    """``a`` then ``b`` or ``b`` then ``a``, at most ``words`` words apart."""
    return rf"\b(?:{a})\w*\s+{_W}{{0,{words}}}?(?:{b})\w*|\b(?:{b})\w*\s+{_W}{{0,{words}}}?(?:{a})\w*"


C = Concept
_CALC = r"calcif|atherosclero|atherom|plaques?\b"
_ENLARGED = r"enlarg|widen|broaden|dilat"
_HEART = r"(?:heart|cardiac)"
_THICK = r"thick(?:en\w*|ness\w*)?\b"  # "thickened", "thickening", "(increase in) thickness", "slightly thick"
_LYMPH_NODE = r"\blymph\s*nodes?\b|\blymphatic\s+nodes?\b"

CARDIOMEGALY = [
    C("cardiomegaly", r"\bcardiomegaly\b|\b(?:cardiac|heart)\s+enlargement\b|\benlarge\w*\s+(?:of\s+)?(?:the\s+)?"
                      rf"{_HEART}\b|\benlarged\s+{_HEART}\b", True),
    C("heart enlarged", rf"\b{_HEART}(?:\s+(?:shadow|silhouette|sizes?|contour|volume|dimensions?))?\s+(?:is\s+|was\s+|"
                        r"are\s+|were\s+|has\s+|have\s+)?(?:not\s+)?(?:been\s+)?(?:\w+ly\s+)?"
                        r"(?:enlarg\w*|larger|increased|large|big)\b(?!\s+(?:blood\s+)?vessels?)"
                        rf"|\bincrease\w*\s+in\s+(?:the\s+)?{_HEART}\s+(?:sizes?|dimensions?|volume)", True),
    C("heart mention", rf"\bthe heart\b|\bheart size\b|\b{_HEART}\s+(?:size|shadow|contour|silhouette)\b"),
    C("cardiothoracic ratio increased", _near(r"cardiothoracic (?:ratio|index)|\bctr\b", r"increas", 3), True),
    C("cardiothoracic ratio", r"\bcardiothoracic (?:ratio|index)\b|\bctr\b"),
]

CHEXPERT_CONCEPTS: dict[str, list[Concept]] = {
    "enlarged cardiomediastinum": [
        C("cardiomediastinal contour", r"\bcardiomediastin\w*|\bmediastinal\s+(?:configuration|silhouette|contour)s?\b"
                                       r"|\bpericardial silhouette\b"),
        C("mediastinal widening", _near(r"mediastin", _ENLARGED, 3), True),
        C("mediastinum", r"\bmediastinum\b"),
        C("mediastinal lymph node", rf"\bmediastinal\s+(?:{_W}{{0,2}})?(?:lymph\w*|adenopathy)|(?:{_LYMPH_NODE}|"
                                    r"\blymphadenopathy\b)(?=[^.;]{0,60}\bmediastin)"),
        C("mediastinal mass", rf"\bmediastinal\s+(?:{_W}{{0,2}})?(?:mass|tumou?r)|\b(?:mass(?:es)?|tumou?r\w*)\b"
                              r"(?=[^.;]{0,60}\bmediastin)"),
        C("aortic abnormality", _near(r"aort", _ENLARGED + r"|tortu|aneurysm|ectasi|" + _CALC, 5)),
        C("great vessels", r"\b(?:great|large|big)\s+(?:blood\s+)?vessels?\b"),
    ],
    "cardiomegaly": CARDIOMEGALY,
    "lung opacity": [
        C("opacity", r"\bopaci\w*", True),
        C("infiltrate", r"\binfiltrat\w*", True),
        C("airspace disease", r"\bair ?space (?:disease|opacit\w*)|\bdecreased translucency\b", True),
        # a CheXpert mention, but CT wording uses it for any organ and for edema: left to the fit
        C("increased density", r"\bincreased density\b"),
        C("ground glass", r"\bground glass\b"),
        C("interstitial or reticular", r"\binterstitial (?:marking|pattern|lung)\w*|\breticula\w*"),
        C("scar", r"(?<!pleural )(?<!pleuro parenchymal )\bscar\w*"),
        C("shadow", r"\bshadows?\b"),
    ],
    "lung lesion": [
        C("nodule", r"(?<!calcified )\bnodul\w*", True),
        C("calcified nodule", r"\bcalcified nodul\w*"),
        C("mass", r"\bmass(?:es)?\b|\blump\w*", True),
        C("massive", r"\bmassive\b"),
        C("neoplasm", r"\btumou?r\w*|\bneoplas\w*|\bcarcinoma\w*|\bcancer\w*|\bmalignan\w*|\bmetasta\w*", True),
        C("space occupying lesion", r"\bspace occupying\b|\boccupying lesion", True),
        C("cavitary lesion", r"\bcavit\w*"),
        C("granuloma", r"\bgranuloma\w*"),
    ],
    "edema": [
        C("edema", r"\b(?:o)?edema\w*", True),
        C("congestion", r"\b(?:vascular|pulmonary|lung)\s+congestion\b|\bheart failure\b|\bchf\b"
                        r"|\bvascular prominence\b|\bindistinctness\b", True),
    ],
    "consolidation": [
        C("consolidation", r"\bconsolidat\w*", True),
        C("air bronchogram", r"\bair bronchogram\w*"),
    ],
    "pneumonia": [
        C("pneumonia", r"\b(?:broncho)?pneumon\w*", True),
        C("infection", r"\binfecti\w*", True),
        C("inflammation", r"\binflam\w*"),
    ],
    "atelectasis": [
        C("atelectasis", r"\batelecta\w*", True),
        C("collapse", r"\bcollaps\w*", True),
        C("volume loss", r"\bvolume loss\b|\b(?:incomplete|insufficient|poor)\s+(?:re\s?)?expansion\b"),
    ],
    "pneumothorax": [C("pneumothorax", r"\b(?:hydro)?pneumothora\w*", True)],
    "pleural effusion": [
        C("effusion", r"(?<!pericardial )\beffusion\w*", True),
        C("pleural fluid", r"\bpleural fluid\b|\bhydrothorax\b|\b(?:pleural|thoracic|chest)\s+(?:cavity\s+)?"
                           r"(?:fluid|liquid)\b", True),
        C("pericardial effusion", r"\bpericardial effusion\w*"),
    ],
    "pleural other": [
        C("pleural thickening", _near(r"pleura", _THICK, 5), True),
        C("pleural hypertrophy", _near(r"pleura", r"hypertroph", 2)),
        C("pleural adhesion or calcification", _near(r"pleura", r"adhesi|calcif|plaques?\b", 3), True),
        C("pleural scar", r"\bpleur\w*\s+(?:parenchymal\s+)?scar\w*|\bfibrothorax\b", True),
        C("fibrosis", r"\bfibros\w*"),
    ],
    "fracture": [
        C("fracture", r"\bfractur\w*", True),
        C("cortical break", r"\b(?:cortex|cortical|bone)\w*\s+(?:\w+\s+){0,3}"
                            r"(?:interrupt\w*|discontinu\w*|broken|break)"),
    ],
    "support devices": [
        C("tube", r"\btubes?\b", True),
        C("catheter or line", r"\bcatheter\w*|\bpicc\b|\b(?:central|venous|arterial|midline)\s+lines?\b|\bport\b"
                              r"|\bmediport\b|\bcannula\w*", True),
        C("pacemaker", r"\bpace(?:r|maker)\w*|\bicd\b|\bdefib\w*|\belectrodes?\b", True),
        C("stent", r"\bstents?\b"),
        C("prosthesis", r"\bprosthe\w*|\bvalve (?:replacement|prosthesis)\b|\bartificial\s+\w+|\bimplant\w*"
                        r"|\bhardware\b|\barthroplast\w*", True),
        C("fixation", r"\bfixation\b|\bplates?\b|\bscrews?\b"),
        C("clips wires sutures", r"\bclips?\b|\bwires?\b|\bsutures?\b|\bcoils?\b|\bstaples?\b|\bmetal\w*"),
        C("drain", r"\bdrain(?:s|age)?\b", True),
        C("device", r"\bdevices?\b|\bapparatus\b|\bequipment\b"),
    ],
}

_ARTERY = r"(?<!coronary )\b(?:arter(?:y|ies|ial)|vascular|vessels?|carotid|subclavian|brachiocephalic|iliac)"

CTRATE_CONCEPTS: dict[str, list[Concept]] = {
    "medical material": [
        C("catheter or port", r"\bcatheter\w*|\bport\b|\bpicc\b|\bcannula\w*|\b(?:central|venous)\s+lines?\b", True),
        C("pacemaker", r"\bpace(?:r|maker)\w*|\bicd\b|\bdefibrillator\w*|\belectrodes?\b", True),
        C("stent", r"\bstents?\b", True),
        C("tube", r"\b(?:endotracheal|tracheostomy|tracheal|chest|drainage|nasogastric|feeding|thoracostomy)\s+tubes?\b"
                  r"|\bintubat\w*|\btracheostomy\b", True),
        C("prosthesis", r"\bprosthe\w*|\bimplant\w*|\bgrafts?\b|\bvalve replacement\b", True),
        C("surgical material", r"\b(?:surgical|medical|foreign|metallic|metal)\s+(?:\w+\s+)?(?:material|clips?|"
                               r"sutures?|wires?|body|bodies|densit\w+|artifacts?)\b|\bclips?\b|\bsutures?\b|\bwires?\b"
                               r"|\bcoils?\b|\bstaples?\b", True),
        C("fixation", r"\bfixation\b|\bscrews?\b|\bplates?\b"),
        C("drain", r"\bdrain(?:s|age)?\b"),
        C("operation", r"\bpost\s?operative\b|\boperat\w*|\bsurg\w*|\bsternotomy\b|\bcabg\b|\bbypass\b|\b\w+ectomy\b"),
    ],
    "arterial wall calcification": [
        C("aortic calcification", _near(r"aort", _CALC, 10), True),
        C("arterial calcification", _near(_ARTERY, _CALC, 5), True),
        C("atherosclerosis", r"\batherosclero\w*|\batherom\w*"),
        C("calcified plaque", r"\bplaques?\b"),
        C("calcification", r"\bcalcif\w*"),
    ],
    "cardiomegaly": CARDIOMEGALY,
    "pericardial effusion": [
        C("pericardial effusion", _near(r"pericard", r"effusion|fluid", 6), True),
        C("pericardial thickening", _near(r"pericard", _THICK, 3)),
    ],
    "coronary artery wall calcification": [
        C("coronary calcification", _near(r"coronar", _CALC, 6), True),
        C("coronary mention", r"\bcoronar\w*|\blad\b|\bcircumflex\b"),
    ],
    "hiatal hernia": [
        C("hiatal hernia", r"\bhiat(?:al|us)\s+hernia\w*|\bhernia\w*\s+(?:\w+\s+){0,3}hiatus\b", True),
        C("hernia", r"\bhernia\w*"),
        C("hiatus", r"\bhiatus\b"),
    ],
    "lymphadenopathy": [
        C("lymphadenopathy", r"\b(?:lymph)?adenopath\w*", True),
        C("enlarged lymph node", rf"\b(?:enlarged|pathologic\w*|swollen|increased|prominent|large)\s+{_W}{{0,3}}?"
                                 rf"(?:{_LYMPH_NODE})|(?:{_LYMPH_NODE})\s+{_W}{{0,6}}?"
                                 rf"(?:enlarg\w*|pathologic\w*|swollen)|(?:{_LYMPH_NODE})\s+enlargement", True),
        C("lymph node", _LYMPH_NODE),
    ],
    "emphysema": [
        C("emphysema", r"\bemphysema\w*", True),
        C("bulla", r"\bbull(?:a|ae|ous)\b|\bblebs?\b", True),
    ],
    "atelectasis": [
        C("atelectasis", r"\batelecta\w*", True),
        C("collapse", r"\bcollaps\w*"),
        C("volume loss", r"\bvolume loss\b"),
    ],
    "lung nodule": [
        C("nodule", r"(?<!calcified )\b(?:micro)?nodul(?:e|es|i)\b|\bnodular\s+(?:lesion|formation|density|densities|"
                    r"opacit\w*)s?\b", True),
        C("nodular", r"\bnodular\b(?!\s+(?:lesion|formation|densit|opacit))"),
        C("calcified nodule", r"\bcalcified (?:micro)?nodul\w*"),
        C("mass", r"\bmass(?:es)?\b"),
        C("granuloma", r"\bgranuloma\w*"),
    ],
    "lung opacity": [
        C("opacity", r"\bopacit\w*", True),
        C("ground glass", r"\bground glass\b", True),
        C("infiltration", r"\binfiltra\w*", True),
        C("density increase", r"\bdensit(?:y|ies)\s+(?:\w+\s+)?increas\w*"
                              r"|\bincrease\w*\s+(?:in\s+)?(?:\w+\s+)?densit\w*|\b(?:hyper)?dense\s+areas?\b", True),
        C("density", r"\bdensit(?:y|ies)\b"),
        C("consolidation", r"\bconsolidat\w*"),
    ],
    "pulmonary fibrotic sequela": [
        C("fibrotic", r"\bfibro\w*", True),
        C("sequela", r"\bsequel\w*", True),
        C("scar", r"\bscar\w*"),
        C("band", r"\bbands?\b"),
    ],
    "pleural effusion": [
        C("pleural effusion", _near(r"pleura|hemithora", r"effusion", 6) + r"|\bhydrothorax\b|\bpleural fluid\b", True),
        C("effusion", r"(?<!pericardial )\beffusion\w*"),
        C("pleural thickening", _near(r"pleura", _THICK, 3)),
    ],
    "mosaic attenuation pattern": [
        C("mosaic", r"\bmosaic\w*", True),
        C("air trapping", r"\bair trapping\b"),
    ],
    "peribronchial thickening": [
        C("peribronchial thickening", _near(r"peribronch", _THICK, 3), True),
        C("bronchial wall thickening", _near(r"bronch", r"wall thick|thick\w* (?:of )?(?:the )?(?:bronch\w* )?walls?"
                                                   r"|wall thickness", 4), True),
        C("peribronchial", r"\bperibronch\w*"),
    ],
    "consolidation": [
        C("consolidation", r"\bconsolidat\w*", True),
        C("air bronchogram", r"\bair bronchogram\w*"),
    ],
    "bronchiectasis": [
        C("bronchiectasis", r"\bbronchiecta\w*", True),
        C("bronchial dilation", _near(r"bronch", r"dilat|ectasi|ectatic", 3), True),
    ],
    "interlobular septal thickening": [
        C("septal thickening", _near(r"sept", _THICK, 3), True),
        C("interlobular septa", r"\binterlobular\b|\bsepta[le]?\b"),
        C("crazy paving", r"\bcrazy paving\b|\bkerley\b", True),
    ],
}

# Lung-parenchyma classes: an affirmed mention in a clause naming another organ (and no lung word) is kept apart.
LUNG_CLASSES = frozenset({
    "lung opacity", "lung lesion", "consolidation", "pneumonia", "atelectasis", "pneumothorax", "lung nodule",
    "emphysema", "pulmonary fibrotic sequela", "mosaic attenuation pattern", "bronchiectasis",
    "interlobular septal thickening", "edema",
})
LUNG_WORDS = re.compile(r"\b(?:lungs?|pulmonary|bronch\w*|pleura\w*|subpleural|lingula\w*|hil(?:um|ar|i|us)|"
                        r"lobes? of (?:the )?(?:left|right|both)|(?:upper|middle|lower) lobes?|alveol\w*|"
                        r"interlobular|parenchyma\w*)\b")
OTHER_ORGANS = re.compile(
    r"\b(?:liver|hepat\w*|kidneys?|renal|spleen|splenic|pancrea\w*|gall ?bladder|biliary|thyroid|breasts?|mammary|"
    r"brain|cerebr\w*|intracranial|skull|sinus\w*|pharyn\w*|laryn\w*|neck|axilla\w*|adrenal|esophag\w*|stomach|"
    r"gastric|bowel|intestin\w*|colon|abdom\w*|peritone\w*|pelvi\w*|bladder|uter\w*|ovar\w*|prostat\w*|"
    r"vertebra\w*|spine|spinal|ribs?|bones?|sternum|muscles?|skin|subcutaneous|chest wall|mediastin\w*|heart|"
    r"cardiac|pericard\w*|aort\w*|lymph\s*nodes?|areola\w*|mastectomy|nipple|thymus|thymic)\b"
)
# General descriptions of something abnormal, whatever the class ("no finding" needs none of them affirmed).
ABNORMAL = re.compile(
    r"\bshadows?\b|\b(?:low|high|mixed|soft tissue)\s+density\b|\bcalcif\w*|\blesions?\b|\bcyst\w*|\bthicken\w*"
    r"|\bhypertroph\w*|\benlarg\w*|\bswell\w*|\bswollen\b|\bdilat\w*|\bwiden\w*|\bstenos\w*|\bnarrow\w*"
    r"|\bcompress\w*|\babnormal\w*|\bpostoperative\b|\bsurg\w*|\bresect\w*|\bstones?\b|\bcalcul\w*|\batroph\w*"
    r"|\bhemorrhag\w*|\bhaemorrhag\w*|\bemphysema\w*|\bbull(?:a|ae|ous)\b|\bfibro\w*|\bplaques?\b|\bhernia\w*"
    r"|\bdeform\w*|\bscoliosis\b|\bdegenerat\w*|\bstrips?\b|\bstripes?\b|\bcords?\b|\bbands?\b|\blymph\s*nodes?\b"
    r"|\binterrupt\w*|\bdiscontinu\w*|\bbroken\b|\bincreas\w*|\bdecreas\w*|\breduc\w*"
)
CONCEPT_SETS = {"chexpert14": CHEXPERT_CONCEPTS, "ctrate18": CTRATE_CONCEPTS}
