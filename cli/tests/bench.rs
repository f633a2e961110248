//! `followup bench --json` on a small workload prints every figure.

use std::process::{Command, Stdio};

#[test]
fn a_small_bench_prints_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_followup"))
        .args(["bench", "-n", "40", "-k", "4", "--link-runs", "1", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["push_new"]["documents"], 40, "{r:#}");
    assert_eq!(r["push_changed"]["documents"], 4, "{r:#}");
    for step in ["push_new", "push_changed"] {
        let s = &r[step];
        assert!(s["round_trips"].as_u64().unwrap() >= 1);
        assert!(s["bytes_up"].as_u64().unwrap() > 0);
        assert!(s["change_bytes_zstd"].as_u64().unwrap() > 0);
        let modelled = s["modelled_64kbit_s"].as_f64().unwrap();
        assert!(modelled >= 0.5 * (s["round_trips"].as_f64().unwrap() + 1.0));
    }
    // Changing 3 answers of 4 responses costs far less than 40 new ones.
    assert!(r["push_changed"]["bytes_up"].as_u64() < r["push_new"]["bytes_up"].as_u64());
    // The public-path push through the shaper: steady, then reset every 5 s; both finish.
    let shaped = r["shaped"].as_array().unwrap();
    assert_eq!(shaped.len(), 2, "{r:#}");
    for l in shaped {
        assert_eq!(l["documents"], 40, "{l:#}");
        assert_eq!(l["finished"], l["runs"], "{l:#}");
        // 40 responses' bytes at 8,000 B/s plus a round trip of 500 ms at least.
        assert!(l["seconds_median"].as_f64().unwrap() > 0.5, "{l:#}");
        assert!(l["wire_bytes_median"].as_u64().unwrap() > 1_000, "{l:#}");
    }
    let c = &r["capture"];
    assert_eq!(c["saves"], 40);
    assert!(c["save_p99_ms"].as_f64().unwrap() >= c["save_p50_ms"].as_f64().unwrap());
    assert!(c["open_ms"].as_f64().unwrap() > 0.0);
    assert!(c["due_list_ms"].as_f64().unwrap() > 0.0);
}
