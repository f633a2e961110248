#!/usr/bin/env python3
"""Merge the Spanish and Portuguese texts into the default instruments (run once; kept so the
texts can be regenerated). Usage: scripts/add-translations.py INSTRUMENTS_DIR"""
import json, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from translations_es_1 import ES as ES1
from translations_es_2 import ES as ES2
from translations_pt import PT

UNITS = {"clinician-followup": {"weight_kg": "kg", "temperature_c": "°C", "heart_rate": "bpm",
                                "systolic_bp": "mmHg", "diastolic_bp": "mmHg", "hospital_days": "days"}}
d = sys.argv[1]
langs = {"es": {**ES1, **ES2}, "pt": PT}
for name in ["patient-outcome-survey", "clinician-followup", "adverse-event-report", "baseline-procedure"]:
    path = os.path.join(d, name + ".json")
    q = json.load(open(path))
    ids = {it["id"]: it for it in q["items"]}
    for item, unit in UNITS.get(name, {}).items():
        ids[item]["unit"] = unit
    tr = {}
    for lang, table in langs.items():
        t = table.get(name)
        if not t:
            continue
        # Every translated item, choice and score must exist.
        for iid, it in t["items"].items():
            assert iid in ids, (name, lang, iid)
            codes = {c["code"] for c in ids[iid].get("choices", [])}
            assert set(it.get("choices", {})) <= codes, (name, lang, iid)
        tr[lang] = t
    out = {"format": 1, "definition": "questionnaire"}
    out.update({k: v for k, v in q.items() if k not in ("format", "definition", "translations")})
    out["language"] = "en"
    out["translations"] = tr
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print("wrote", path)
