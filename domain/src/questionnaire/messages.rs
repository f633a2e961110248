//! The validation messages, in every language the app ships: English (the fallback), Spanish
//! and Portuguese. A message is built from the rule broken and its values; the definition does
//! not carry messages, so every published form gets them in every language below.
//!
//! Numbers are shown as Rust writes them (a point before decimals, in every language), the same
//! form the user typed them in the app's numeric fields.

use std::fmt::Display;

use super::{AnswerValue, ItemType};

/// A language of the app's own texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    /// English, the fallback.
    #[default]
    En,
    /// Spanish.
    Es,
    /// Portuguese.
    Pt,
}

impl Lang {
    /// Every language the app's messages exist in.
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Es, Lang::Pt];

    /// The language tag, e.g. `es`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
            Lang::Pt => "pt",
        }
    }

    /// The app language for a locale tag, by the same fallback as definition texts
    /// (`pt-BR` → `pt`); English when none fits.
    pub fn for_locale(locale: &str) -> Lang {
        for tag in crate::definitions::fallback_chain(locale) {
            if let Some(l) = Lang::ALL.into_iter().find(|l| l.tag() == tag) {
                return l;
            }
        }
        Lang::En
    }
}

/// What a problem message says, with its values.
pub(super) enum Msg<'a> {
    AnsweredButDisabled,
    Required,
    UnknownItem {
        questionnaire: &'a str,
        version: &'a str,
    },
    BelowMin {
        shown: &'a dyn Display,
        min: f64,
    },
    AboveMax {
        shown: &'a dyn Display,
        max: f64,
    },
    NotFinite {
        shown: f64,
    },
    TooManyDecimals {
        shown: f64,
        places: usize,
        max: u32,
    },
    UnknownChoice {
        code: &'a str,
    },
    DuplicateChoice {
        code: &'a str,
    },
    ExclusiveChoice {
        label: &'a str,
    },
    InvalidDate {
        text: &'a str,
    },
    TooLong {
        n: usize,
        max: usize,
    },
    WrongType {
        expected: ItemType,
        got: &'a AnswerValue,
    },
}

fn expected(lang: Lang, t: ItemType) -> &'static str {
    match (lang, t) {
        (Lang::En, ItemType::Boolean) => "yes or no (true/false)",
        (Lang::En, ItemType::Integer) => "a whole number",
        (Lang::En, ItemType::Decimal) => "a number",
        (Lang::En, ItemType::SingleChoice) => "one choice code",
        (Lang::En, ItemType::MultipleChoice) => "a list of choice codes",
        (Lang::En, ItemType::Date) => "a date written YYYY-MM-DD",
        (Lang::En, ItemType::Text) => "text",
        (Lang::En, ItemType::Scale0To10) => "a whole number from 0 to 10",
        (Lang::Es, ItemType::Boolean) => "sí o no (true/false)",
        (Lang::Es, ItemType::Integer) => "un número entero",
        (Lang::Es, ItemType::Decimal) => "un número",
        (Lang::Es, ItemType::SingleChoice) => "el código de una opción",
        (Lang::Es, ItemType::MultipleChoice) => "una lista de códigos de opciones",
        (Lang::Es, ItemType::Date) => "una fecha escrita AAAA-MM-DD",
        (Lang::Es, ItemType::Text) => "texto",
        (Lang::Es, ItemType::Scale0To10) => "un número entero de 0 a 10",
        (Lang::Pt, ItemType::Boolean) => "sim ou não (true/false)",
        (Lang::Pt, ItemType::Integer) => "um número inteiro",
        (Lang::Pt, ItemType::Decimal) => "um número",
        (Lang::Pt, ItemType::SingleChoice) => "o código de uma opção",
        (Lang::Pt, ItemType::MultipleChoice) => "uma lista de códigos de opções",
        (Lang::Pt, ItemType::Date) => "uma data escrita AAAA-MM-DD",
        (Lang::Pt, ItemType::Text) => "texto",
        (Lang::Pt, ItemType::Scale0To10) => "um número inteiro de 0 a 10",
    }
}

fn described(lang: Lang, v: &AnswerValue) -> &'static str {
    match (lang, v) {
        (Lang::En, AnswerValue::Bool(_)) => "yes/no",
        (Lang::En, AnswerValue::Int(_)) => "a whole number",
        (Lang::En, AnswerValue::Decimal(_)) => "a decimal number",
        (Lang::En, AnswerValue::Text(_)) => "text",
        (Lang::En, AnswerValue::Choices(_)) => "a list of choices",
        (Lang::Es, AnswerValue::Bool(_)) => "sí/no",
        (Lang::Es, AnswerValue::Int(_)) => "un número entero",
        (Lang::Es, AnswerValue::Decimal(_)) => "un número decimal",
        (Lang::Es, AnswerValue::Text(_)) => "texto",
        (Lang::Es, AnswerValue::Choices(_)) => "una lista de opciones",
        (Lang::Pt, AnswerValue::Bool(_)) => "sim/não",
        (Lang::Pt, AnswerValue::Int(_)) => "um número inteiro",
        (Lang::Pt, AnswerValue::Decimal(_)) => "um número decimal",
        (Lang::Pt, AnswerValue::Text(_)) => "texto",
        (Lang::Pt, AnswerValue::Choices(_)) => "uma lista de opções",
    }
}

/// The message for `item`, starting with the item id (`q03: …`).
pub(super) fn render(lang: Lang, item: &str, msg: &Msg<'_>) -> String {
    let text = match lang {
        Lang::En => en(msg),
        Lang::Es => es(msg),
        Lang::Pt => pt(msg),
    };
    format!("{item}: {text}")
}

fn en(msg: &Msg<'_>) -> String {
    match *msg {
        Msg::AnsweredButDisabled => {
            "is answered but not asked, because of the answers it depends on".into()
        }
        Msg::Required => "an answer is required".into(),
        Msg::UnknownItem {
            questionnaire,
            version,
        } => {
            format!("is not an item of {questionnaire} {version}")
        }
        Msg::BelowMin { shown, min } => format!("{shown} is below the minimum of {min}"),
        Msg::AboveMax { shown, max } => format!("{shown} is above the maximum of {max}"),
        Msg::NotFinite { shown } => format!("{shown} is not a finite number"),
        Msg::TooManyDecimals { shown, places, max } => {
            format!("{shown} has {places} digits after the point; at most {max} allowed")
        }
        Msg::UnknownChoice { code } => format!("{code:?} is not one of the choices"),
        Msg::DuplicateChoice { code } => format!("{code:?} is chosen more than once"),
        Msg::ExclusiveChoice { label } => {
            format!("{label:?} cannot be combined with other choices")
        }
        Msg::InvalidDate { text } => format!("{text:?} is not a date written YYYY-MM-DD"),
        Msg::TooLong { n, max } => {
            format!("the text has {n} characters; at most {max} allowed")
        }
        Msg::WrongType { expected: t, got } => format!(
            "expected {}, got {}",
            expected(Lang::En, t),
            described(Lang::En, got)
        ),
    }
}

fn es(msg: &Msg<'_>) -> String {
    match *msg {
        Msg::AnsweredButDisabled => {
            "tiene respuesta pero no corresponde preguntarla, por las respuestas de las que depende"
                .into()
        }
        Msg::Required => "la respuesta es obligatoria".into(),
        Msg::UnknownItem {
            questionnaire,
            version,
        } => {
            format!("no es una pregunta de {questionnaire} {version}")
        }
        Msg::BelowMin { shown, min } => format!("{shown} es menor que el mínimo de {min}"),
        Msg::AboveMax { shown, max } => format!("{shown} es mayor que el máximo de {max}"),
        Msg::NotFinite { shown } => format!("{shown} no es un número finito"),
        Msg::TooManyDecimals { shown, places, max } => {
            format!("{shown} tiene {places} decimales; se permiten como máximo {max}")
        }
        Msg::UnknownChoice { code } => format!("{code:?} no es una de las opciones"),
        Msg::DuplicateChoice { code } => format!("{code:?} está elegida más de una vez"),
        Msg::ExclusiveChoice { label } => {
            format!("{label:?} no se puede combinar con otras opciones")
        }
        Msg::InvalidDate { text } => {
            format!("{text:?} no es una fecha escrita AAAA-MM-DD")
        }
        Msg::TooLong { n, max } => {
            format!("el texto tiene {n} caracteres; se permiten como máximo {max}")
        }
        Msg::WrongType { expected: t, got } => format!(
            "se esperaba {}, pero se recibió {}",
            expected(Lang::Es, t),
            described(Lang::Es, got)
        ),
    }
}

fn pt(msg: &Msg<'_>) -> String {
    match *msg {
        Msg::AnsweredButDisabled => {
            "tem resposta, mas não deveria ser perguntada, pelas respostas de que depende".into()
        }
        Msg::Required => "a resposta é obrigatória".into(),
        Msg::UnknownItem {
            questionnaire,
            version,
        } => {
            format!("não é uma pergunta de {questionnaire} {version}")
        }
        Msg::BelowMin { shown, min } => format!("{shown} é menor que o mínimo de {min}"),
        Msg::AboveMax { shown, max } => format!("{shown} é maior que o máximo de {max}"),
        Msg::NotFinite { shown } => format!("{shown} não é um número finito"),
        Msg::TooManyDecimals { shown, places, max } => {
            format!("{shown} tem {places} casas decimais; são permitidas no máximo {max}")
        }
        Msg::UnknownChoice { code } => format!("{code:?} não é uma das opções"),
        Msg::DuplicateChoice { code } => format!("{code:?} foi escolhida mais de uma vez"),
        Msg::ExclusiveChoice { label } => {
            format!("{label:?} não pode ser combinada com outras opções")
        }
        Msg::InvalidDate { text } => format!("{text:?} não é uma data escrita AAAA-MM-DD"),
        Msg::TooLong { n, max } => {
            format!("o texto tem {n} caracteres; são permitidos no máximo {max}")
        }
        Msg::WrongType { expected: t, got } => format!(
            "esperava-se {}, mas veio {}",
            expected(Lang::Pt, t),
            described(Lang::Pt, got)
        ),
    }
}
