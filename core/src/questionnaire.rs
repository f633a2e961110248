//! (placeholder until the questionnaire engine lands)
use serde::{Deserialize, Serialize};
/// An answer's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnswerValue {
    Bool(bool),
    Int(i64),
    Decimal(f64),
    Text(String),
    Choices(Vec<String>),
}
