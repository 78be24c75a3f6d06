"""Templated reports: the sentence tables and the assembly of a report from labels and finding parameters.

A report walks its disease set's ``REPORT_LAYOUT`` in order: a ``Sentence`` says one of its normal phrasings
(or the finding's abnormal sentence when `replaced_by` is present), a ``Group`` says the abnormal sentences of
its present members and one negative sentence naming its absent ones. Abnormal sentences come from
``ABNORMAL_SENTENCES`` with the finding's parameters (``finding_params``) as template fields. Phrasings are
chosen with the report stream; the order of those draws is part of the generator's contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------- abnormal sentences
# kind -> variant -> phrasings. Fields: the finding's parameters, plus "loc" (lobe phrase, when the finding has a
# side and lobe), "a" and "b" (size_mm), and the extra fields of _EXTRA_FIELDS.
ABNORMAL_SENTENCES: dict[str, dict[str, tuple[str, ...]]] = {
    "nodule": {
        "multiple": (
            "Multiple solid nodules are seen in the lungs, the largest a {what} of about {a} mm x {b} mm in the {loc}.",
            "Multiple soft tissue nodules are seen, the largest a {what} of about {a} mm x {b} mm in the {loc}.",
        ),
        "single": (
            "A soft tissue {what} of about {a} mm x {b} mm is seen in the {loc}.",
            "A solid {what} is seen in the {loc}, about {a} mm x {b} mm in size.",
            "A {what} shadow of about {a} mm x {b} mm can be seen in the {loc}.",
        ),
    },
    "ggo": {"default": (
        "A ground-glass opacity of about {a} mm x {b} mm is seen in the {loc}.",
        "A patchy ground-glass opacity is seen in the {loc}, about {a} mm x {b} mm.",
        "Ground-glass opacity of about {a} mm x {b} mm can be seen in the {loc}.",
    )},
    "consolidation": {"default": (
        "A patchy consolidation of about {a} mm x {b} mm is seen in the {loc}{bronchogram}.",
        "Consolidation is seen in the {loc}, about {a} mm x {b} mm{bronchogram}.",
        "A consolidation shadow of about {a} mm x {b} mm can be seen in the {loc}{bronchogram}.",
    )},
    "pneumonia": {"default": (
        "Patchy exudative shadows with blurred margins are seen in the {where}, consistent with pneumonia.",
        "Multiple patchy exudative shadows are seen in the {where}, suggesting pneumonia.",
        "Findings of pneumonia are seen in the {where}, with multiple patchy exudative shadows.",
    )},
    "atelectasis": {"default": (
        "Atelectasis of the {loc} is seen, with a wedge-shaped dense shadow and volume loss.",
        "A wedge-shaped dense shadow with volume loss is seen in the {loc}, consistent with atelectasis.",
        "The {loc} shows atelectasis with volume loss.",
    )},
    "edema": {"default": (
        "Both lungs show diffusely increased density with thickened interlobular septa, "
        "consistent with interstitial edema.",
        "Diffuse interstitial edema is seen in both lungs, with increased lung density and septal lines.",
        "The lung fields show diffusely increased density and septal lines, suggesting interstitial pulmonary edema.",
    )},
    "cardiomegaly": {
        "ctrate18": (
            "Cardiomegaly is seen, with a cardiothoracic ratio of about {ctr:.2f}.",
            "The heart is enlarged, consistent with cardiomegaly, with a cardiothoracic ratio of about {ctr:.2f}.",
        ),
        "chexpert14": (
            "The heart shadow is enlarged, with a cardiothoracic ratio of about {ctr:.2f}, consistent with "
            "cardiomegaly.",
            "Cardiomegaly is seen, with a cardiothoracic ratio of about {ctr:.2f}.",
            "The heart is enlarged, with a cardiothoracic ratio of about {ctr:.2f}.",
        ),
    },
    "mediastinum": {"default": (
        "The mediastinum is widened to about {width_mm} mm, with multiple enlarged lymph nodes up to "
        "{largest_node_mm} mm in short axis.",
        "Multiple enlarged lymph nodes up to {largest_node_mm} mm in short axis are seen in the mediastinum, "
        "and the mediastinum is widened.",
        "The upper mediastinum is widened to about {width_mm} mm with enlarged lymph nodes measuring up to "
        "{largest_node_mm} mm.",
    )},
    "lymphadenopathy": {"default": (
        "Mediastinal lymphadenopathy is seen, with enlarged lymph nodes up to {largest_node_mm} mm in short axis.",
        "Enlarged lymph nodes consistent with lymphadenopathy are seen in the mediastinum, the largest about "
        "{largest_node_mm} mm.",
    )},
    "effusion": {
        "bilateral": (
            "Bilateral pleural effusions are seen, about {right_mm} mm deep on the right and {left_mm} mm deep on "
            "the left.",
            "Pleural effusion is seen on both sides, about {right_mm} mm deep on the right and {left_mm} mm on the "
            "left.",
        ),
        "unilateral": (
            "A {amount} pleural effusion is seen on the {side} side, with a maximum depth of about {depth} mm.",
            "There is a {amount} amount of pleural effusion on the {side} side, about {depth} mm deep.",
            "A {side} pleural effusion of about {depth} mm depth is seen.",
        ),
    },
    "pleural_plaque": {
        "calcified": (
            "Pleural thickening with calcified plaques is seen along the {side} {wall} chest wall.",
            "Localized pleural thickening with calcification is seen along the {side} {wall} chest wall.",
            "There is pleural thickening of the {side} {wall} chest wall, with calcified pleural plaques.",
        ),
        "thickening": (
            "Localized pleural thickening of about {thickness_mm} mm is seen along the {side} {wall} chest wall.",
            "There is pleural thickening along the {side} {wall} chest wall, about {thickness_mm} mm thick.",
        ),
    },
    "pneumothorax": {"default": (
        "A {side} pneumothorax is seen, with a lateral air rim of about {rim_mm} mm and the {side} lung compressed.",
        "Pneumothorax is seen on the {side} side, with the lung compressed by an air rim of about {rim_mm} mm.",
        "There is a {side}-sided pneumothorax with a lateral air rim of about {rim_mm} mm.",
    )},
    "fracture": {"default": (
        "A fracture of the {nth} {side} rib is seen, with a gap of about {gap_mm} mm, displacement of about "
        "{displacement_mm} mm and callus formation.",
        "The {nth} {side} rib shows a displaced fracture with callus, the fracture gap about {gap_mm} mm.",
        "A displaced fracture with callus formation is seen in the {side} {nth} rib.",
    )},
    "device": {
        "pacemaker": (
            "A pacemaker is seen in the {side} anterior chest wall, with its lead extending into the right ventricle.",
            "A cardiac pacemaker is seen under the skin of the {side} upper chest wall, and its lead reaches the "
            "heart.",
            "Changes after pacemaker implantation: the generator lies in the {side} chest wall, the lead in the right "
            "ventricle.",
        ),
        "port catheter": (
            "An implanted port is seen in the {side} anterior chest wall, with the catheter tip in the superior vena "
            "cava.",
            "A port catheter is seen in the {side} chest wall, with its tip in the superior vena cava.",
        ),
        "central venous catheter": (
            "A central venous catheter is seen from the {side} side, with its tip in the superior vena cava.",
            "A central venous catheter is seen, with its tip in the superior vena cava.",
        ),
    },
    "aortic_calc": {"default": (
        "Calcified atherosclerotic plaques are seen in the wall of the thoracic aorta.",
        "Calcification is seen in the aortic wall, with multiple calcified plaques.",
    )},
    "coronary_calc": {"default": (
        "Calcification is seen in the coronary artery walls.",
        "Coronary artery calcification is seen, with {segments} calcified segments along the coronary arteries.",
    )},
    "pericardial_effusion": {"default": (
        "Pericardial effusion is seen, with a thickness of about {thickness_mm} mm.",
        "There is pericardial effusion about {thickness_mm} mm thick around the heart.",
    )},
    "hiatal_hernia": {"default": (
        "A hiatal hernia is seen behind the heart, measuring about {size_mm} mm and containing air and fluid.",
        "A hiatal hernia of about {size_mm} mm with air and fluid is seen above the diaphragm.",
    )},
    "emphysema": {"default": (
        "Centrilobular emphysema is seen in the upper lobes of both lungs, with low-attenuation areas "
        "up to {max_mm} mm.",
        "Emphysema with low-attenuation areas up to {max_mm} mm is seen in the upper lobes.",
    )},
    "fibrosis": {"default": (
        "Fibrotic sequelae with linear strands are seen in the {loc}.",
        "Linear fibrotic sequela is seen in the {loc}.",
    )},
    "mosaic": {"default": (
        "A mosaic attenuation pattern is seen in both lungs.",
        "Mosaic attenuation with patchy areas of differing density is seen in both lungs.",
    )},
    "peribronchial": {"default": (
        "Peribronchial thickening is seen in both lungs, with bronchial walls of about {wall_mm} mm.",
        "Peribronchial thickening is seen along the bronchi of both lungs.",
    )},
    "bronchiectasis": {"default": (
        "Cylindrical bronchiectasis is seen in the {loc}, with dilated bronchi up to {diameter_mm} mm in diameter.",
        "Bronchiectasis with bronchi up to {diameter_mm} mm in diameter is seen in the {loc}.",
    )},
    "septal": {"default": (
        "Interlobular septal thickening is seen in {where}.",
        "Smooth interlobular septal thickening is noted in {where}.",
    )},
}


def _effusion_amount(depth_mm: int) -> str:
    return "small" if depth_mm < 25 else "moderate" if depth_mm <= 45 else "large"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _lobe_phrase(side: str, lobe: str, style: int) -> str:
    return f"{lobe} lobe of the {side} lung" if style == 0 else f"{side} {lobe} lobe"


def _effusion_fields(p: dict, style: int, disease_set: str) -> dict:
    if len(p["sides"]) == 2:
        return {"right_mm": p["depth_mm"]["right"], "left_mm": p["depth_mm"]["left"]}
    side = p["sides"][0]
    depth = p["depth_mm"][side]
    return {"side": side, "depth": depth, "amount": _effusion_amount(depth)}


def _pneumonia_where(p: dict, style: int, disease_set: str) -> dict:
    if len(p["sides"]) == 2:
        return {"where": f"{p['lobe']} lobes of both lungs"}
    return {"where": _lobe_phrase(p["sides"][0], p["lobe"], style)}


# kind -> (params, style, disease set) -> extra template fields
_EXTRA_FIELDS: dict[str, Callable[[dict, int, str], dict]] = {
    "nodule": lambda p, style, ds: {"what": "nodule" if ds == "ctrate18" else p["kind"]},
    "consolidation": lambda p, style, ds: {"bronchogram": ", with air bronchograms" if p["air_bronchogram"] else ""},
    "pneumonia": _pneumonia_where,
    "effusion": _effusion_fields,
    "fracture": lambda p, style, ds: {"nth": _ordinal(p["rib"])},
    "septal": lambda p, style, ds: {
        "where": "the lower zones of both lungs" if p["distribution"] == "lower" else "both lungs"},
}
# kind -> (params, disease set) -> variant of ABNORMAL_SENTENCES (default "default")
_VARIANT: dict[str, Callable[[dict, str], str]] = {
    "nodule": lambda p, ds: "multiple" if p["count"] > 1 else "single",
    "cardiomegaly": lambda p, ds: "ctrate18" if ds == "ctrate18" else "chexpert14",
    "effusion": lambda p, ds: "bilateral" if len(p["sides"]) == 2 else "unilateral",
    "pleural_plaque": lambda p, ds: "calcified" if p["calcified"] else "thickening",
    "device": lambda p, ds: p["kind"],
}


def _pick(options, rng) -> str:
    return options[int(rng.integers(len(options)))]


def abnormal_sentence(kind: str, params: dict, rng, disease_set: str) -> str:
    """The sentence of finding `kind` with parameters `params` (two draws: lobe-phrase style, phrasing)."""
    style = int(rng.integers(2))
    fields = dict(params)
    if "side" in params and "lobe" in params:
        fields["loc"] = _lobe_phrase(params["side"], params["lobe"], style)
    if isinstance(params.get("size_mm"), list):  # (largest, second) axial diameters
        fields["a"], fields["b"] = params["size_mm"]
    if kind in _EXTRA_FIELDS:
        fields.update(_EXTRA_FIELDS[kind](params, style, disease_set))
    variant = _VARIANT[kind](params, disease_set) if kind in _VARIANT else "default"
    return _pick(ABNORMAL_SENTENCES[kind][variant], rng).format(**fields)


def _join(nouns) -> str:
    return nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " or " + nouns[-1]


def negative_sentence(nouns, rng, where: str = "") -> str:
    """"No <noun, noun or noun> is seen<where>." in one of three phrasings."""
    nouns = _join(nouns)
    return _pick([f"No {nouns} is seen{where}.", f"There is no {nouns}{where}.", f"No {nouns}{where}."], rng)


# ----------------------------------------------------------------------------------------------- report layout
@dataclass(frozen=True)
class Sentence:
    """One of `options`, or the abnormal sentence of finding kind `replaced_by` when it is present."""

    options: tuple[str, ...]
    replaced_by: str | None = None


@dataclass(frozen=True)
class Group:
    """The abnormal sentences of the present `members` (in order), then one negative sentence listing the nouns of
    the absent `negated` kinds. With `all_clear`: when no negated kind is present, one of these phrasings comes
    first instead of the negative sentence."""

    members: tuple[str, ...]
    negated: tuple[tuple[str, tuple[str, ...]], ...]  # (kind, nouns)
    where: str = ""
    all_clear: tuple[str, ...] = ()


REPORT_LAYOUT: dict[str, tuple[Sentence | Group, ...]] = {
    "chexpert14": (
        Sentence(("Thorax is symmetrical.", "The thorax is symmetrical.", "The chest is symmetrical.")),
        Sentence(("The lung window shows clear lung markings and good transparency of the lung fields.",
                  "Bilateral lung markings are clear and natural, and the lung fields are well aerated.",
                  "The lung markings of both lungs are clear, with good transparency of the lung fields."),
                 replaced_by="edema"),
        Group(("nodule", "ggo", "consolidation", "pneumonia", "atelectasis"),
              (("nodule", ("nodule", "mass")), ("consolidation", ("consolidation",)),
               ("ggo", ("ground-glass opacity",))), where=" in either lung"),
        Sentence(("Bilateral pulmonary hila are not large.", "The bilateral hila are normal in size.",
                  "Both pulmonary hila are normal.")),
        Sentence(("The heart shadow is not enlarged, and the great vessels are normal.",
                  "The size and shape of the heart and great vessels are normal.",
                  "The heart is normal in size, without cardiomegaly."), replaced_by="cardiomegaly"),
        Sentence(("The mediastinum is not widened, and no enlarged lymph nodes are seen in it.",
                  "No enlarged lymph node is found in the mediastinum, and the mediastinum is not widened.",
                  "The mediastinum is centered and not widened, without enlarged lymph nodes."),
                 replaced_by="mediastinum"),
        Group(("effusion", "pleural_plaque", "pneumothorax"),
              (("effusion", ("pleural effusion",)), ("pleural_plaque", ("pleural thickening",))),
              all_clear=("No pleural effusion or pleural thickening.",
                         "No pleural effusion or pleural thickening is seen.",
                         "There is no pleural effusion or pleural thickening.")),
        Sentence(("No rib fracture is seen.", "No obvious signs of rib fracture are found on both sides.",
                  "The bony thorax is intact, with no fracture."), replaced_by="fracture"),
        Sentence(("No catheter, tube or pacemaker is seen.", "No medical device is seen in the chest.",
                  "There is no catheter or pacemaker."), replaced_by="device"),
    ),
    "ctrate18": (
        Sentence(("Trachea and both main bronchi are open.", "The trachea and both main bronchi are patent.",
                  "Trachea and both main bronchi are open, with no obstruction.")),
        Group(("cardiomegaly", "pericardial_effusion", "aortic_calc", "coronary_calc"),
              (("cardiomegaly", ("cardiomegaly",)), ("pericardial_effusion", ("pericardial effusion",)),
               ("aortic_calc", ("aortic wall calcification",)), ("coronary_calc", ("coronary artery calcification",)))),
        Group(("lymphadenopathy", "hiatal_hernia"),
              (("lymphadenopathy", ("mediastinal lymphadenopathy",)), ("hiatal_hernia", ("hiatal hernia",)))),
        Group(("emphysema", "atelectasis", "nodule", "ggo", "fibrosis", "mosaic", "peribronchial", "consolidation",
               "bronchiectasis", "septal"),
              (("nodule", ("nodule",)), ("ggo", ("ground-glass opacity",)), ("consolidation", ("consolidation",)),
               ("emphysema", ("emphysema",))), where=" in either lung"),
        Sentence(("No pleural effusion is seen.", "No pleural effusion.", "There is no pleural effusion."),
                 replaced_by="effusion"),
        Sentence(("Bone structures in the scan area are normal.", "The bony structures of the thorax are normal.")),
        Sentence(("No catheter, tube or pacemaker is seen.", "No medical material is seen in the chest.",
                  "There is no catheter or pacemaker."), replaced_by="device"),
    ),
}


def compose_report(disease_set: str, present: dict[str, dict], rng) -> str:
    """The report of a case whose present finding kinds have parameters `present` ({kind: params dict})."""
    out = []
    for item in REPORT_LAYOUT[disease_set]:
        if isinstance(item, Sentence):
            if item.replaced_by is not None and item.replaced_by in present:
                out.append(abnormal_sentence(item.replaced_by, present[item.replaced_by], rng, disease_set))
            else:
                out.append(_pick(item.options, rng))
            continue
        all_clear = bool(item.all_clear) and not any(k in present for k, _ in item.negated)
        if all_clear:
            out.append(_pick(item.all_clear, rng))
        out.extend(abnormal_sentence(k, present[k], rng, disease_set) for k in item.members if k in present)
        absent = [noun for k, nouns in item.negated if k not in present for noun in nouns]
        if absent and not all_clear:
            out.append(negative_sentence(absent, rng, item.where))
    return " ".join(out)
