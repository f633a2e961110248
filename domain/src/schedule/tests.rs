#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use chrono::{Days, NaiveDate};
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn done(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn state(s: &Schedule, visit: &str, proc: &str, as_of: &str) -> VisitState {
    s.state_of_visit(visit, date(proc), &BTreeSet::new(), date(as_of))
        .unwrap()
}

#[test]
fn default_registry_is_the_documented_schedule() {
    let s = Schedule::default_registry();
    assert_eq!(s.grace_days(), 14);
    let clin = s.for_questionnaire("clinician-followup").unwrap();
    let got: Vec<(&str, i64, i64, i64)> = clin
        .visits()
        .iter()
        .map(|v| {
            (
                v.id.as_str(),
                v.offset_days,
                v.window_before_days,
                v.window_after_days,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("d7", 7, 2, 2),
            ("m1", 30, 14, 14),
            ("m3", 91, 14, 14),
            ("m6", 182, 14, 14),
            ("m12", 365, 14, 14),
            ("y2", 730, 30, 30),
            ("y3", 1095, 30, 30),
            ("y4", 1460, 30, 30),
            ("y5", 1825, 30, 30),
        ]
    );
    let survey = s.for_questionnaire("patient-outcome-survey").unwrap();
    assert_eq!(survey.visits().len(), 8);
    assert!(s.for_questionnaire("nope").is_none());
    // Every visit's questionnaire is a shipped instrument.
    for v in s.visits() {
        assert!(
            crate::questionnaire::instrument(&v.questionnaire).is_some(),
            "{}",
            v.questionnaire
        );
    }
    // Round trip.
    assert_eq!(Schedule::from_json(&s.to_json()).unwrap(), s);
}

#[test]
fn day_7_boundaries() {
    // Procedure 2024-01-01: target 01-08, window 01-06..=01-10, overdue until the day before
    // m1's window opens (day 16 = 01-17), since 01-10 + 14 days would be later.
    let s = Schedule::default_registry();
    let p = "2024-01-01";
    assert_eq!(state(&s, "d7", p, "2024-01-05"), VisitState::Upcoming);
    assert_eq!(state(&s, "d7", p, "2024-01-06"), VisitState::Due);
    assert_eq!(state(&s, "d7", p, "2024-01-10"), VisitState::Due);
    assert_eq!(state(&s, "d7", p, "2024-01-11"), VisitState::Overdue);
    assert_eq!(state(&s, "d7", p, "2024-01-16"), VisitState::Overdue);
    assert_eq!(state(&s, "d7", p, "2024-01-17"), VisitState::Missed);
    assert_eq!(state(&s, "m1", p, "2024-01-17"), VisitState::Due);
    assert_eq!(state(&s, "m1", p, "2024-01-16"), VisitState::Upcoming);

    let st = s.visits_for(date(p), &BTreeSet::new(), date("2024-01-11"));
    let d7 = st.iter().find(|v| v.visit_id == "d7").unwrap();
    assert_eq!(d7.target, date("2024-01-08"));
    assert_eq!(d7.window_start, date("2024-01-06"));
    assert_eq!(d7.window_end, date("2024-01-10"));
    assert_eq!(d7.grace_end, date("2024-01-16"));
    assert_eq!(d7.state, VisitState::Overdue);
    assert_eq!(d7.questionnaire, "clinician-followup");
}

#[test]
fn month_3_and_year_5_boundaries() {
    // Procedure 2024-01-01; m3 target day 91 = 2024-04-01, window 03-18..=04-15, grace 14 days
    // (m6's window opens on day 168, far later) so overdue until 04-29.
    let s = Schedule::default_registry();
    let p = "2024-01-01";
    assert_eq!(state(&s, "m3", p, "2024-03-17"), VisitState::Upcoming);
    assert_eq!(state(&s, "m3", p, "2024-03-18"), VisitState::Due);
    assert_eq!(state(&s, "m3", p, "2024-04-15"), VisitState::Due);
    assert_eq!(state(&s, "m3", p, "2024-04-16"), VisitState::Overdue);
    assert_eq!(state(&s, "m3", p, "2024-04-29"), VisitState::Overdue);
    assert_eq!(state(&s, "m3", p, "2024-04-30"), VisitState::Missed);
    assert_eq!(state(&s, "m3-survey", p, "2024-04-30"), VisitState::Missed);

    // y5: day 1825 = 2028-12-30 (2024 and 2028 are leap years); window ±30; last visit, so
    // grace is the full 14 days.
    let y5 = s
        .visits_for(date(p), &BTreeSet::new(), date(p))
        .into_iter()
        .find(|v| v.visit_id == "y5")
        .unwrap();
    assert_eq!(y5.target, date("2028-12-30"));
    assert_eq!(y5.window_start, date("2028-11-30"));
    assert_eq!(y5.window_end, date("2029-01-29"));
    assert_eq!(y5.grace_end, date("2029-02-12"));
    assert_eq!(state(&s, "y5", p, "2028-11-29"), VisitState::Upcoming);
    assert_eq!(state(&s, "y5", p, "2028-11-30"), VisitState::Due);
    assert_eq!(state(&s, "y5", p, "2029-01-29"), VisitState::Due);
    assert_eq!(state(&s, "y5", p, "2029-01-30"), VisitState::Overdue);
    assert_eq!(state(&s, "y5", p, "2029-02-12"), VisitState::Overdue);
    assert_eq!(state(&s, "y5", p, "2029-02-13"), VisitState::Missed);
}

#[test]
fn done_visits_are_done_whenever() {
    let s = Schedule::default_registry();
    let p = date("2024-01-01");
    let d = done(&["d7", "m3"]);
    for as_of in ["2023-12-01", "2024-01-08", "2024-04-20", "2030-01-01"] {
        let st = s.visits_for(p, &d, date(as_of));
        for v in &st {
            assert_eq!(
                v.state == VisitState::Done,
                v.visit_id == "d7" || v.visit_id == "m3",
                "{} on {as_of}",
                v.visit_id
            );
        }
    }
    // Unknown ids in the done set are ignored.
    let st = s.visits_for(p, &done(&["zz"]), date("2024-01-08"));
    assert!(st.iter().all(|v| v.state != VisitState::Done));
}

#[test]
fn per_visit_grace_and_empty_overdue() {
    let s = Schedule::from_json(
        &json!({
            "id": "s", "version": "1", "grace_days": 5,
            "visits": [
                { "id": "b", "label": "B", "offset_days": 20, "window_before_days": 1,
                  "window_after_days": 1, "questionnaire": "q" },
                { "id": "a", "label": "A", "offset_days": 10, "window_before_days": 0,
                  "window_after_days": 8, "questionnaire": "q" },
                { "id": "c", "label": "C", "offset_days": 40, "window_before_days": 0,
                  "window_after_days": 0, "questionnaire": "q", "grace_days": 0 }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let ids: Vec<&str> = s.visits().iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]); // sorted by offset
    let p = "2024-01-01";
    // a: window days 10..=18, b opens day 19: no overdue period at all.
    assert_eq!(state(&s, "a", p, "2024-01-19"), VisitState::Due); // day 18
    assert_eq!(state(&s, "a", p, "2024-01-20"), VisitState::Missed); // day 19
                                                                     // b: window 19..=21, grace 5 → overdue 22..=26.
    assert_eq!(state(&s, "b", p, "2024-01-27"), VisitState::Overdue); // day 26
    assert_eq!(state(&s, "b", p, "2024-01-28"), VisitState::Missed);
    // c: one-day window, no grace.
    assert_eq!(state(&s, "c", p, "2024-02-09"), VisitState::Upcoming); // day 39
    assert_eq!(state(&s, "c", p, "2024-02-10"), VisitState::Due); // day 40
    assert_eq!(state(&s, "c", p, "2024-02-11"), VisitState::Missed); // day 41
}

#[test]
fn worklist_sorts_by_urgency_and_filters() {
    let s = Schedule::default_registry()
        .for_questionnaire("clinician-followup")
        .unwrap();
    let as_of = date("2024-06-01");
    let patients = vec![
        ("p1", date("2024-05-20"), done(&[])), // d7 overdue (window end 05-29)
        ("p2", date("2024-05-26"), done(&[])), // d7 due (window 05-31..06-04)
        ("p3", date("2024-05-25"), done(&[])), // d7 due (window 05-30..06-03)
        ("p4", date("2024-05-21"), done(&["d7"])), // d7 done
        ("p5", date("2024-05-19"), done(&[])), // d7 overdue (window end 05-28)
    ];
    let list = s.worklist(
        patients.iter().map(|(k, d, set)| (*k, *d, set)),
        as_of,
        &[VisitState::Overdue, VisitState::Due],
    );
    let got: Vec<(&str, &str, VisitState)> = list
        .iter()
        .map(|pv| (pv.patient, pv.status.visit_id, pv.status.state))
        .collect();
    assert_eq!(
        got,
        [
            ("p5", "d7", VisitState::Overdue),
            ("p1", "d7", VisitState::Overdue),
            ("p3", "d7", VisitState::Due),
            ("p2", "d7", VisitState::Due),
        ]
    );
    // Owned done sets work too.
    let list = s.worklist(patients.clone(), as_of, &[VisitState::Done]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].patient, "p4");
}

#[test]
fn worklist_for_10000_patients_is_fast() {
    let s = Schedule::default_registry();
    let start = date("2020-01-01");
    let patients: Vec<(u32, NaiveDate, BTreeSet<String>)> = (0..10_000u32)
        .map(|i| {
            let d = start
                .checked_add_days(Days::new(u64::from(i % 1800)))
                .unwrap();
            let set = if i % 3 == 0 {
                done(&["d7", "m1"])
            } else {
                done(&[])
            };
            (i, d, set)
        })
        .collect();
    let as_of = date("2024-06-01");
    let t = std::time::Instant::now();
    let list = s.worklist(
        patients.iter().map(|(k, d, set)| (*k, *d, set)),
        as_of,
        &[VisitState::Overdue, VisitState::Due],
    );
    let elapsed = t.elapsed();
    assert!(!list.is_empty());
    eprintln!(
        "worklist over 10,000 patients: {} lines in {elapsed:?}",
        list.len()
    );
    // Speed is measured by the criterion benchmark (`cargo bench -p followup-core`), not here.
}

// ---------------------------------------------------------------- malformed schedules

fn refused(v: serde_json::Value) -> ScheduleError {
    match Schedule::from_json(&v.to_string()) {
        Ok(_) => panic!("schedule accepted"),
        Err(e) => e,
    }
}

fn visit(id: &str, offset: i64, before: i64, after: i64) -> serde_json::Value {
    json!({ "id": id, "label": id, "offset_days": offset, "window_before_days": before,
            "window_after_days": after, "questionnaire": "q" })
}

fn sched(visits: Vec<serde_json::Value>) -> serde_json::Value {
    json!({ "id": "s", "version": "1", "grace_days": 7, "visits": visits })
}

#[test]
fn malformed_schedules_are_refused() {
    assert!(matches!(
        refused(sched(vec![visit("a", 10, 1, 1), visit("a", 20, 1, 1)])),
        ScheduleError::DuplicateVisit(v) if v == "a"
    ));
    assert!(matches!(
        refused(sched(vec![visit("a", 10, -1, 1)])),
        ScheduleError::InvalidVisit { visit, .. } if visit == "a"
    ));
    assert!(matches!(
        refused(sched(vec![visit("a", 10, 1, -1)])),
        ScheduleError::InvalidVisit { visit, .. } if visit == "a"
    ));
    assert!(matches!(
        refused(sched(vec![visit("a", -3, 0, 0)])),
        ScheduleError::InvalidVisit { visit, .. } if visit == "a"
    ));
    assert!(matches!(
        refused(sched(vec![visit("a", 3, 5, 0)])),
        ScheduleError::InvalidVisit { visit, .. } if visit == "a"
    ));
    assert!(matches!(
        refused(sched(vec![visit("", 3, 0, 0)])),
        ScheduleError::InvalidVisit { visit, .. } if visit == "#1"
    ));
    assert!(matches!(
        refused(sched(vec![visit("a", 100_000, 0, 0)])),
        ScheduleError::InvalidVisit { .. }
    ));
    let e = refused(sched(vec![visit("b", 20, 5, 5), visit("a", 10, 1, 5)]));
    assert!(
        matches!(&e, ScheduleError::OverlappingWindows { first, second, .. } if first == "a" && second == "b"),
        "{e}"
    );
    assert!(matches!(refused(sched(vec![])), ScheduleError::NoVisits));
    let mut neg = sched(vec![visit("a", 10, 1, 1)]);
    neg["grace_days"] = json!(-1);
    assert!(matches!(
        refused(neg),
        ScheduleError::BadField {
            field: "grace_days",
            ..
        }
    ));
    let mut extra = sched(vec![visit("a", 10, 1, 1)]);
    extra["visits"][0]["colour"] = json!("red");
    assert!(matches!(refused(extra), ScheduleError::Json(_)));
    // Overlap is allowed across series.
    let mut other = visit("s1", 10, 1, 1);
    other["questionnaire"] = json!("survey");
    assert!(Schedule::from_json(&sched(vec![visit("a", 10, 1, 1), other]).to_string()).is_ok());
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn states_are_consistent_and_monotone(
        proc_day in 0i64..40_000,
        start in -100i64..2_200,
        steps in proptest::collection::vec(0u64..60, 1..80),
        done_mask in any::<u32>(),
    ) {
        let s = Schedule::default_registry();
        let base = date("1990-01-01");
        let p = base.checked_add_days(Days::new(proc_day as u64)).unwrap();
        let done_set: BTreeSet<String> = s
            .visits()
            .iter()
            .enumerate()
            .filter(|(i, _)| done_mask & (1 << (i % 32)) != 0 && i % 3 == 0)
            .map(|(_, v)| v.id.clone())
            .collect();
        let mut as_of = if start >= 0 {
            p.checked_add_days(Days::new(start as u64)).unwrap()
        } else {
            p.checked_sub_days(Days::new((-start) as u64)).unwrap()
        };
        let mut last: Vec<Option<VisitState>> = vec![None; s.visits().len()];
        for step in steps {
            as_of = as_of.checked_add_days(Days::new(step)).unwrap();
            let st = s.visits_for(p, &done_set, as_of);
            prop_assert_eq!(st.len(), s.visits().len());
            for (i, v) in st.iter().enumerate() {
                prop_assert_eq!(v.visit_id, s.visits()[i].id.as_str());
                // Exactly the documented state for the dates.
                let expected = if done_set.contains(v.visit_id) {
                    VisitState::Done
                } else if as_of < v.window_start {
                    VisitState::Upcoming
                } else if as_of <= v.window_end {
                    VisitState::Due
                } else if as_of <= v.grace_end {
                    VisitState::Overdue
                } else {
                    VisitState::Missed
                };
                prop_assert_eq!(v.state, expected);
                prop_assert!(v.window_start <= v.target && v.target <= v.window_end);
                prop_assert!(v.window_end <= v.grace_end);
                // Monotone: never goes backward as as_of increases.
                if let Some(prev) = last[i] {
                    prop_assert!(prev <= v.state, "{} went from {:?} to {:?}", v.visit_id, prev, v.state);
                }
                last[i] = Some(v.state);
            }
        }
    }

    #[test]
    fn extreme_dates_never_panic(a in any::<i32>(), b in any::<i32>()) {
        let s = Schedule::default_registry();
        let d = |n: i32| NaiveDate::from_num_days_from_ce_opt(n).unwrap_or(NaiveDate::MIN);
        let _ = s.visits_for(d(a), &BTreeSet::new(), d(b));
        let _ = s.worklist([(0u8, d(a), BTreeSet::new())], d(b), &[VisitState::Due]);
    }
}

#[test]
fn a_comma_separated_visit_list_marks_visits_done() {
    let s = Schedule::default_registry();
    let procedure = date("2024-01-01");
    let as_of = date("2024-01-09");
    let list = VisitList("m1,d7");
    assert_eq!(
        s.state_of_visit("d7", procedure, &list, as_of),
        Some(VisitState::Done)
    );
    assert_eq!(
        s.state_of_visit("d7", procedure, &VisitList(""), as_of),
        Some(VisitState::Due)
    );
    // A prefix of another id is not a match.
    assert_eq!(
        s.state_of_visit("m1", procedure, &VisitList("m12"), date("2024-01-31")),
        Some(VisitState::Due)
    );
}

proptest! {
    /// The work list (which looks at the done visits only where they can matter) lists exactly
    /// the visits whose full classification is one of the states asked for.
    #[test]
    fn worklist_lists_exactly_the_visits_in_the_states_asked_for(
        procedures in proptest::collection::vec(
            (0u64..1500, proptest::collection::btree_set(0usize..20, 0..8)),
            1..12,
        ),
        as_of in 0u64..2500,
        wanted in proptest::collection::btree_set(0usize..5, 0..5),
    ) {
        let s = Schedule::default_registry();
        let all = [
            VisitState::Overdue,
            VisitState::Due,
            VisitState::Upcoming,
            VisitState::Missed,
            VisitState::Done,
        ];
        let states: Vec<VisitState> = wanted.iter().map(|&i| all[i]).collect();
        let start = date("2022-01-01");
        let ids: Vec<String> = s.visits().iter().map(|v| v.id.clone()).collect();
        let patients: Vec<(usize, NaiveDate, String)> = procedures
            .iter()
            .enumerate()
            .map(|(k, (offset, done))| {
                let list: Vec<&str> = done
                    .iter()
                    .filter_map(|&i| ids.get(i).map(String::as_str))
                    .collect();
                (k, start + Days::new(*offset), list.join(","))
            })
            .collect();
        let as_of = start + Days::new(as_of);
        let mut got: Vec<(usize, String, VisitState)> = s
            .worklist(
                patients.iter().map(|(k, d, list)| (*k, *d, VisitList(list))),
                as_of,
                &states,
            )
            .into_iter()
            .map(|pv| (pv.patient, pv.status.visit_id.to_string(), pv.status.state))
            .collect();
        got.sort();
        let mut expected: Vec<(usize, String, VisitState)> = patients
            .iter()
            .flat_map(|(k, d, list)| {
                s.visits_for(*d, &VisitList(list), as_of)
                    .into_iter()
                    .filter(|v| states.contains(&v.state))
                    .map(|v| (*k, v.visit_id.to_string(), v.state))
                    .collect::<Vec<_>>()
            })
            .collect();
        expected.sort();
        prop_assert_eq!(got, expected);
    }
}
