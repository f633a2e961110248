# Portuguese texts of the patient outcome survey. Used once by scripts/add-translations.py.
PT = {}
PT["patient-outcome-survey"] = {
 "title": "Sua saúde desde o procedimento",
 "description": "Questionário de resultados que o paciente responde no próprio celular quando chega a data: sintomas, atividades do dia a dia, satisfação, novos problemas de saúde e custos.",
 "items": {
  "completed_date": {"text": "Data de hoje"},
  "overall_change": {"text": "Em comparação com antes do procedimento, sua doença está", "choices": {
    "much_better": "Muito melhor", "better": "Um pouco melhor", "same": "Mais ou menos igual",
    "worse": "Um pouco pior", "much_worse": "Muito pior"}},
  "symptom_primary": {"text": "Na última semana, quão forte foi o principal sintoma pelo qual você foi tratado? (0 nada - 10 o pior possível)"},
  "symptom_pain": {"text": "Na última semana, quão forte foi sua dor? (0 nada - 10 a pior possível)"},
  "symptom_fatigue": {"text": "Na última semana, quão cansado ou cansada você se sentiu? (0 nada - 10 o pior possível)"},
  "symptom_sleep": {"text": "Na última semana, quanta dificuldade você teve para dormir? (0 nenhuma - 10 a pior possível)"},
  "symptom_mood": {"text": "Na última semana, quão desanimado ou ansioso você se sentiu? (0 nada - 10 extremamente)"},
  "daily_activities": {"text": "Você consegue fazer suas atividades habituais (trabalho, tarefas de casa, cuidar de si)?", "choices": {
    "no_difficulty": "Sem dificuldade", "slight": "Com pouca dificuldade", "moderate": "Com dificuldade moderada",
    "severe": "Com muita dificuldade", "unable": "Não consigo fazer"}},
  "walking": {"text": "Andar", "choices": {
    "unaided": "Ando sem ajuda", "aid": "Ando com bengala ou andador", "wheelchair": "Uso cadeira de rodas",
    "bed": "Fico na cama a maior parte do dia"}},
  "work_status": {"text": "Seu trabalho", "choices": {
    "full_time": "Trabalho em tempo integral", "part_time": "Trabalho em meio período",
    "not_working_health": "Não trabalho por causa da minha saúde", "not_working_other": "Não trabalho por outro motivo",
    "retired": "Aposentado ou aposentada", "student": "Estudante"}},
  "new_problems": {"text": "Você teve algum problema de saúde novo desde o procedimento ou desde o último questionário?"},
  "new_problem_types": {"text": "Que tipo de problema?", "choices": {
    "fever_infection": "Febre ou infecção",
    "administration_site": "Dor, inchaço ou vermelhidão no local onde as células foram aplicadas",
    "allergic": "Reação alérgica, manchas na pele ou inchaço",
    "lump": "Um caroço ou crescimento novo",
    "stroke_signs": "Fraqueza ou dormência repentina, dificuldade para falar ou enxergar",
    "seizure": "Convulsão (ataque)",
    "condition_worse": "Minha doença piorou",
    "skin_gut_liver": "Manchas na pele, diarreia ou pele amarelada (possível doença do enxerto contra o hospedeiro)",
    "other": "Outra coisa"}},
  "new_problem_description": {"text": "Descreva o problema e quando ele começou"},
  "sought_care": {"text": "Você precisou de atendimento médico por causa disso?", "choices": {
    "none": "Não", "doctor": "Fui ao médico", "emergency": "Fui ao pronto-socorro", "hospital": "Fui internado no hospital"}},
  "contacted_clinic": {"text": "Você avisou a clínica que fez o seu tratamento?"},
  "clinic_response": {"text": "Como a clínica respondeu?", "choices": {
    "resolved": "Responderam e o problema foi resolvido",
    "responded_unresolved": "Responderam, mas o problema não foi resolvido",
    "no_response": "Ainda não responderam"}},
  "satisfaction": {"text": "Quão satisfeito ou satisfeita você está com o procedimento? (0 nada - 10 totalmente)"},
  "would_recommend": {"text": "Você recomendaria este procedimento a alguém com a mesma doença que você?", "choices": {
    "yes": "Sim", "unsure": "Não tenho certeza", "no": "Não"}},
  "extra_costs": {"text": "Você pagou por cuidados ligados ao procedimento além do preço combinado?"},
  "extra_costs_amount": {"text": "Quanto, aproximadamente, na moeda em que você pagou a clínica?"},
  "financial_hardship": {"text": "O custo do procedimento causou dificuldades financeiras para você?", "choices": {
    "none": "Não", "some": "Algumas dificuldades", "severe": "Dificuldades graves (dívidas, venda de bens)"}},
  "comments": {"text": "Há mais alguma coisa que você queira que o registro saiba?"},
 },
 "scores": {"symptom_mean": "Média dos sintomas (0-10)",
            "function": "Função: atividades do dia a dia mais andar (0 melhor - 7 pior)"},
}
