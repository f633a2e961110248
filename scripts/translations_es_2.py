# Spanish texts of the default instruments (part 2). Used once by scripts/add-translations.py.
ES = {}
_AE_CATS = {
    "infection": "Infección", "immune_reaction": "Reacción inmunitaria adversa (alérgica, inflamatoria)",
    "tumour": "Tumor o crecimiento anormal", "cell_migration": "Migración celular no deseada",
    "administration": "Complicación de la administración (inyección, infusión, punción, anestesia)",
    "stroke": "Accidente cerebrovascular", "seizure": "Convulsión",
    "deterioration": "Empeoramiento de la enfermedad tratada",
    "gvhd": "Enfermedad de injerto contra huésped",
}
ES["adverse-event-report"] = {
 "title": "Reporte de evento adverso",
 "description": "Una complicación reportada por el paciente o por la clínica. La clínica tratante la adjudica (relación causal, acción, remedio) en un registro de adjudicación aparte.",
 "items": {
  "category": {"text": "Categoría", "choices": dict(_AE_CATS, financial_harm="Daño económico", other="Otra")},
  "category_other": {"text": "Otra categoría: descríbala"},
  "onset_date": {"text": "Fecha de inicio"},
  "severity_grade": {"text": "Grado de gravedad (CTCAE)", "choices": {
    "1": "Grado 1 - Leve: síntomas ausentes o leves; solo observación; no requiere intervención",
    "2": "Grado 2 - Moderado: requiere intervención mínima, local o no invasiva; limita las actividades instrumentales de la vida diaria",
    "3": "Grado 3 - Grave o médicamente significativo, sin riesgo vital inmediato; requiere hospitalización; incapacitante; limita el autocuidado",
    "4": "Grado 4 - Consecuencias que ponen en riesgo la vida; requiere intervención urgente",
    "5": "Grado 5 - Muerte relacionada con el evento adverso"}},
  "seriousness": {"text": "Gravedad reglamentaria", "choices": {
    "hospitalisation": "Requirió o prolongó una hospitalización", "life_threatening": "Puso en riesgo la vida",
    "disability": "Discapacidad persistente o importante", "death": "Muerte", "none": "Ninguna de estas"}},
  "hospital_admission_date": {"text": "Fecha de ingreso al hospital"},
  "death_date": {"text": "Fecha de fallecimiento"},
  "outcome": {"text": "Desenlace", "choices": {
    "recovered": "Recuperado", "recovered_with_sequelae": "Recuperado con secuelas", "recovering": "En recuperación",
    "not_recovered": "No recuperado", "fatal": "Mortal", "unknown": "Desconocido"}},
  "resolution_date": {"text": "Fecha de recuperación"},
  "description": {"text": "Qué ocurrió"},
  "treatment": {"text": "Tratamiento dado para el evento"},
  "clinic_notified": {"text": "¿Se informó a la clínica tratante?"},
  "clinic_notified_date": {"text": "Fecha en que se informó a la clínica"},
  "costs_incurred": {"text": "Costos del tratamiento del evento pagados por el paciente"},
 },
 "scores": {"severity": "Grado de gravedad (1-5)"},
}
_UNK = "Desconocido / no se informó"
ES["baseline-procedure"] = {
 "title": "Datos basales del procedimiento: lo que se informó al paciente",
 "description": "Se registra una vez por procedimiento, antes o el mismo día: la clínica, qué se hará, con qué células, bajo qué situación regulatoria, qué se consintió, qué se prometió y cómo se medirá, y cuánto cuesta (National MS Society, 'Stem cell clinics - questions to ask').",
 "items": {
  "clinic_accreditation": {"text": "Acreditación del centro tratante", "choices": {
    "fact": "FACT (Foundation for the Accreditation of Cellular Therapy)", "jacie": "JACIE",
    "registry": "Acreditación de un registro o sociedad de medicina celular (p. ej., ICMS)",
    "national_licence": "Licencia de la autoridad sanitaria nacional", "other": "Otra acreditación",
    "none": "Ninguna", "unknown": _UNK}},
  "clinic_accreditation_other": {"text": "Otra acreditación: nombre y organismo"},
  "lab_accredited": {"text": "¿Está acreditado el laboratorio donde se producen las células?", "choices": {
    "yes": "Sí", "no": "No", "unknown": _UNK}},
  "team_experience": {"text": "¿Tiene el equipo tratante experiencia documentada con esta enfermedad?", "choices": {
    "yes": "Sí", "no": "No", "unknown": _UNK}},
  "condition": {"text": "Enfermedad tratada", "help": "Indique el diagnóstico, p. ej., esclerosis múltiple remitente-recurrente; agregue el código CIE-10 si lo conoce."},
  "procedure_type": {"text": "Tipo de procedimiento", "choices": {
    "ahsct": "Trasplante autólogo de progenitores hematopoyéticos (TAPH)",
    "allo_hsct": "Trasplante alogénico de progenitores hematopoyéticos",
    "cell_infusion": "Infusión de células (intravenosa)", "cell_injection": "Inyección de células", "other": "Otro"}},
  "procedure_type_other": {"text": "Otro procedimiento: descríbalo"},
  "route": {"text": "Vía de administración", "choices": {
    "intravenous": "Intravenosa", "intrathecal": "Intratecal (en el líquido cefalorraquídeo)",
    "intra_articular": "Intraarticular (en una articulación)", "intramuscular": "Intramuscular",
    "direct_injection": "Inyección directa en un órgano o tejido", "other": "Otra"}},
  "route_site": {"text": "Sitio de la inyección (p. ej., médula espinal, cerebro, rodilla)"},
  "cell_type": {"text": "Tipo de célula", "choices": {
    "mesenchymal": "Células estromales/madre mesenquimales (MSC)", "haematopoietic": "Células madre hematopoyéticas",
    "mononuclear": "Células mononucleares de médula ósea o sangre (concentrado)",
    "stromal_vascular_fraction": "Fracción vascular estromal de tejido adiposo",
    "induced_pluripotent": "Derivadas de células madre pluripotentes inducidas (iPS)", "other": "Otro", "unknown": _UNK}},
  "cell_type_reason": {"text": "¿Por qué se eligió este tipo de célula para esta enfermedad?"},
  "source_tissue": {"text": "Tejido de origen", "choices": {
    "bone_marrow": "Médula ósea", "adipose": "Tejido adiposo (grasa)", "umbilical_cord_blood": "Sangre de cordón umbilical",
    "umbilical_cord_tissue": "Tejido de cordón umbilical", "peripheral_blood": "Sangre periférica (movilizada)",
    "other": "Otro", "unknown": _UNK}},
  "origin": {"text": "¿Las células provienen del paciente o de un donante?", "choices": {
    "autologous": "Autólogas (las células del propio paciente)", "allogeneic": "Alogénicas (células de un donante)",
    "unknown": _UNK}},
  "donor_match": {"text": "Compatibilidad del donante", "choices": {
    "matched_related": "Donante emparentado HLA compatible", "matched_unrelated": "Donante no emparentado HLA compatible",
    "mismatched": "Donante no compatible o sin estudio de compatibilidad", "pooled": "Producto de varios donantes o de uso inmediato (\u00aboff-the-shelf\u00bb)",
    "unknown": _UNK}},
  "manipulation": {"text": "Manipulación de las células", "choices": {
    "minimal": "Mínima (p. ej., concentradas, no cultivadas)", "more_than_minimal": "Más que mínima (p. ej., cultivadas, expandidas)",
    "genetically_modified": "Modificadas genéticamente", "unknown": _UNK}},
  "contamination_testing": {"text": "¿Se analizaron las células en busca de contaminantes y agentes infecciosos antes de usarlas?", "choices": {
    "yes": "Sí", "no": "No", "unknown": _UNK}},
  "regulatory_status": {"text": "Situación regulatoria del tratamiento", "choices": {
    "approved_indication": "Producto aprobado para esta indicación",
    "investigational_new_drug": "Bajo una solicitud de nuevo fármaco en investigación (IND) o su equivalente nacional",
    "registered_trial": "Dentro de un ensayo clínico registrado",
    "unregulated": "Ninguna de estas (no aprobado, fuera de un ensayo)", "unknown": _UNK}},
  "trial_registration_id": {"text": "Número de registro del ensayo (p. ej., ClinicalTrials.gov NCT01234567)"},
  "ind_number": {"text": "Número de IND o de autorización, si se conoce"},
  "published_evidence": {"text": "Evidencia presentada de que este tipo de célula y esta técnica benefician esta enfermedad", "choices": {
    "peer_reviewed": "Publicaciones con revisión por pares", "clinic_material": "Solo material o testimonios de la propia clínica",
    "none": "No se presentó ninguna"}},
  "consent_signed": {"text": "¿El paciente revisó y firmó un consentimiento informado detallado?"},
  "consent_date": {"text": "Fecha de firma del consentimiento"},
  "consent_covers": {"text": "El consentimiento describe", "choices": {
    "procedure": "El procedimiento", "side_effects": "Los efectos secundarios a corto y largo plazo",
    "risks": "Los riesgos y cómo se vigilan", "alternatives": "Los tratamientos alternativos", "costs": "Los costos",
    "follow_up": "La atención de seguimiento", "registry": "La participación en el registro"}},
  "risks_explained": {"text": "Riesgos explicados al paciente", "choices": dict(_AE_CATS,
    financial="Daño económico (costos no cubiertos)", none="No se explicó ninguno")},
  "promised_benefits": {"text": "Beneficios prometidos del procedimiento"},
  "benefit_measures": {"text": "¿Cómo se medirán esos beneficios y durante cuánto tiempo?"},
  "follow_up_care": {"text": "Atención de seguimiento que ofrece el centro", "choices": {
    "immediate_and_long_term": "Inmediata y a largo plazo", "immediate_only": "Solo inmediata", "none": "Ninguna",
    "unknown": _UNK}},
  "complications_cover": {"text": "¿Quién paga el tratamiento de las complicaciones?", "choices": {
    "insurance": "El seguro de salud", "clinic": "La clínica", "patient": "El paciente", "unknown": _UNK}},
  "insurance_coverage": {"text": "¿El seguro de salud cubre alguna parte del procedimiento?", "choices": {
    "none": "No", "partial": "En parte", "full": "Totalmente", "appeal": "Denegado, con apelación en curso", "unknown": "Desconocido"}},
  "currency": {"text": "Moneda de los montos siguientes (código ISO 4217, p. ej., USD)"},
  "cost_procedure": {"text": "Precio del procedimiento"},
  "cost_other": {"text": "Otros cargos y viaje"},
  "cost_out_of_pocket": {"text": "Gasto de bolsillo del paciente"},
 },
 "scores": {"total_cost": "Precio del procedimiento más otros cargos y viaje"},
}
