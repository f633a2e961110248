# Spanish texts of the default instruments (part 1). Used once by scripts/add-translations.py.
ES = {}
ES["patient-outcome-survey"] = {
 "title": "Su salud desde el procedimiento",
 "description": "Encuesta de resultados que el paciente responde en su propio teléfono cuando corresponde: síntomas, actividades diarias, satisfacción, nuevos problemas de salud y costos.",
 "items": {
  "completed_date": {"text": "Fecha de hoy"},
  "overall_change": {"text": "Comparada con antes del procedimiento, su enfermedad está", "choices": {
    "much_better": "Mucho mejor", "better": "Un poco mejor", "same": "Más o menos igual",
    "worse": "Un poco peor", "much_worse": "Mucho peor"}},
  "symptom_primary": {"text": "En la última semana, ¿qué tan fuerte fue el síntoma principal por el que lo trataron? (0 nada - 10 lo peor)"},
  "symptom_pain": {"text": "En la última semana, ¿qué tan fuerte fue su dolor? (0 nada - 10 lo peor)"},
  "symptom_fatigue": {"text": "En la última semana, ¿qué tan cansado o cansada se ha sentido? (0 nada - 10 lo peor)"},
  "symptom_sleep": {"text": "En la última semana, ¿cuánta dificultad tuvo para dormir? (0 nada - 10 lo peor)"},
  "symptom_mood": {"text": "En la última semana, ¿qué tan decaído o ansioso se sintió? (0 nada - 10 muchísimo)"},
  "daily_activities": {"text": "¿Puede hacer sus actividades diarias habituales (trabajo, tareas de la casa, cuidado personal)?", "choices": {
    "no_difficulty": "Sin dificultad", "slight": "Con un poco de dificultad", "moderate": "Con bastante dificultad",
    "severe": "Con mucha dificultad", "unable": "No puedo hacerlas"}},
  "walking": {"text": "Caminar", "choices": {
    "unaided": "Camino sin ayuda", "aid": "Camino con bastón o andador", "wheelchair": "Uso silla de ruedas",
    "bed": "Paso en cama la mayor parte del día"}},
  "work_status": {"text": "Su trabajo", "choices": {
    "full_time": "Trabajo a tiempo completo", "part_time": "Trabajo a tiempo parcial",
    "not_working_health": "No trabajo por mi salud", "not_working_other": "No trabajo por otro motivo",
    "retired": "Jubilado o jubilada", "student": "Estudiante"}},
  "new_problems": {"text": "¿Ha tenido algún problema de salud nuevo desde el procedimiento o desde su última encuesta?"},
  "new_problem_types": {"text": "¿Qué tipo de problema?", "choices": {
    "fever_infection": "Fiebre o infección",
    "administration_site": "Dolor, hinchazón o enrojecimiento donde le pusieron las células",
    "allergic": "Reacción alérgica, sarpullido o hinchazón",
    "lump": "Un bulto o crecimiento nuevo",
    "stroke_signs": "Debilidad o adormecimiento repentinos, dificultad para hablar o para ver",
    "seizure": "Convulsión (ataque)",
    "condition_worse": "Mi enfermedad empeoró",
    "skin_gut_liver": "Sarpullido, diarrea o piel amarilla (posible enfermedad de injerto contra huésped)",
    "other": "Otra cosa"}},
  "new_problem_description": {"text": "Describa el problema y cuándo empezó"},
  "sought_care": {"text": "¿Necesitó atención médica por ese problema?", "choices": {
    "none": "No", "doctor": "Fui al médico", "emergency": "Fui a urgencias", "hospital": "Me internaron en el hospital"}},
  "contacted_clinic": {"text": "¿Le avisó a la clínica que lo trató?"},
  "clinic_response": {"text": "¿Cómo respondió la clínica?", "choices": {
    "resolved": "Respondieron y se ocuparon del problema",
    "responded_unresolved": "Respondieron, pero no se ocuparon del problema",
    "no_response": "No han respondido"}},
  "satisfaction": {"text": "¿Qué tan satisfecho o satisfecha está con el procedimiento? (0 nada - 10 totalmente)"},
  "would_recommend": {"text": "¿Recomendaría este procedimiento a alguien con su misma enfermedad?", "choices": {
    "yes": "Sí", "unsure": "No estoy seguro", "no": "No"}},
  "extra_costs": {"text": "¿Ha pagado por atención relacionada con el procedimiento más allá del precio acordado?"},
  "extra_costs_amount": {"text": "¿Cuánto, aproximadamente, en la moneda en que le pagó a la clínica?"},
  "financial_hardship": {"text": "¿El costo del procedimiento le ha causado dificultades económicas?", "choices": {
    "none": "No", "some": "Algunas dificultades", "severe": "Dificultades graves (deudas, venta de bienes)"}},
  "comments": {"text": "¿Hay algo más que quiera que sepa el registro?"},
 },
 "scores": {"symptom_mean": "Promedio de síntomas (0-10)",
            "function": "Función: actividades diarias más caminar (0 mejor - 7 peor)"},
}
ES["clinician-followup"] = {
 "title": "Consulta de seguimiento clínico",
 "description": "Seguimiento clínico de un procedimiento de terapia celular: evolución de la enfermedad, síntomas, capacidad funcional, signos vitales y la lista de complicaciones a vigilar (infección, reacción inmunitaria, tumor, migración celular, complicaciones de la administración, accidente cerebrovascular, convulsiones, empeoramiento, enfermedad de injerto contra huésped).",
 "items": {
  "visit_date": {"text": "Fecha de la consulta"},
  "visit_mode": {"text": "Cómo se atendió al paciente", "choices": {
    "in_person": "En persona", "video": "Videollamada", "phone": "Llamada telefónica", "records": "Solo a partir de la historia clínica"}},
  "condition_status": {"text": "Evolución de la enfermedad tratada desde el procedimiento", "choices": {
    "improved": "Mejoró", "stable": "Estable", "worse": "Empeoró"}},
  "condition_worse_detail": {"text": "¿En qué ha empeorado la enfermedad?"},
  "symptom_primary": {"text": "Intensidad del síntoma principal tratado (0 nada - 10 lo peor)"},
  "symptom_pain": {"text": "Dolor (0 nada - 10 lo peor)"},
  "symptom_fatigue": {"text": "Fatiga (0 nada - 10 lo peor)"},
  "ecog": {"text": "Estado funcional (ECOG)", "choices": {
    "0": "0 - Totalmente activo", "1": "1 - Limitado en actividades intensas, ambulatorio",
    "2": "2 - Ambulatorio, capaz de cuidarse solo, incapaz de trabajar",
    "3": "3 - Autocuidado limitado, en cama o sillón más de la mitad del día",
    "4": "4 - Totalmente incapacitado", "5": "5 - Fallecido"}},
  "edss": {"text": "EDSS (solo esclerosis múltiple)", "help": "En pasos de 0,5."},
  "weight_kg": {"text": "Peso (kg)", "unit": "kg"},
  "temperature_c": {"text": "Temperatura (°C)", "unit": "°C"},
  "heart_rate": {"text": "Frecuencia cardíaca (latidos por minuto)", "unit": "lpm"},
  "systolic_bp": {"text": "Presión arterial sistólica (mmHg)", "unit": "mmHg"},
  "diastolic_bp": {"text": "Presión arterial diastólica (mmHg)", "unit": "mmHg"},
  "complications_any": {"text": "¿Alguna complicación desde el procedimiento o la última consulta?"},
  "complications": {"text": "Complicaciones observadas", "choices": {
    "infection": "Infección", "immune_reaction": "Reacción inmunitaria adversa (alérgica, inflamatoria)",
    "tumour": "Tumor o crecimiento anormal", "cell_migration": "Migración celular no deseada",
    "administration": "Complicación de la administración (inyección, infusión, punción, anestesia)",
    "stroke": "Accidente cerebrovascular", "seizure": "Convulsión",
    "deterioration": "Empeoramiento de la enfermedad tratada",
    "gvhd": "Enfermedad de injerto contra huésped", "other": "Otra"}},
  "infection_site": {"text": "Localización de la infección", "choices": {
    "administration_site": "Sitio de inyección o infusión", "bloodstream": "Torrente sanguíneo (sepsis)",
    "cns": "Sistema nervioso central (meningitis, absceso)", "respiratory": "Respiratoria",
    "urinary": "Urinaria", "other": "Otra"}},
  "tumour_location": {"text": "Localización y naturaleza del tumor o crecimiento"},
  "migration_site": {"text": "¿Dónde se encontraron células fuera del sitio previsto?"},
  "seizure_count": {"text": "Número de convulsiones desde la última consulta"},
  "gvhd_grade": {"text": "Grado de la enfermedad de injerto contra huésped", "choices": {
    "acute_1": "Aguda, grado I", "acute_2": "Aguda, grado II", "acute_3": "Aguda, grado III",
    "acute_4": "Aguda, grado IV", "chronic_mild": "Crónica, leve", "chronic_moderate": "Crónica, moderada",
    "chronic_severe": "Crónica, grave"}},
  "complications_detail": {"text": "Describa las complicaciones, su tratamiento y su evolución"},
  "adverse_event_reported": {"text": "¿Se presentó un reporte de evento adverso por cada complicación?"},
  "hospitalised": {"text": "¿Hospitalizado desde el procedimiento o la última consulta?"},
  "hospital_days": {"text": "Días de hospitalización", "unit": "días"},
  "further_cell_therapy": {"text": "¿Otra terapia celular desde el procedimiento o la última consulta?"},
  "further_cell_therapy_detail": {"text": "¿Qué terapia, dónde y cuándo?"},
  "notes": {"text": "Notas"},
 },
 "scores": {"symptom_burden": "Carga de síntomas: promedio de síntoma principal, dolor y fatiga (0-10)",
            "ecog": "Estado funcional ECOG"},
}
