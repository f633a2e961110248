//! Charts rendered on the server as inline SVG (no JavaScript): horizontal bars with their values
//! written out, a `<title>` and `role="img"` for screen readers; each chart sits next to a table
//! of the same figures.

use std::fmt::Write;

/// One bar.
pub struct Bar {
    pub label: String,
    /// The bar's length, 0..=`max`.
    pub value: f64,
    /// The text written after the bar.
    pub text: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart; `max` is the value of a full-width bar.
pub fn bars(title: &str, bars: &[Bar], max: f64, colour: &str) -> String {
    const ROW: usize = 22;
    const LABEL_W: usize = 130;
    const BAR_W: f64 = 300.0;
    let h = ROW * bars.len().max(1) + 8;
    let w = LABEL_W + BAR_W as usize + 90;
    let mut s = String::with_capacity(256 + bars.len() * 200);
    let _ = write!(
        s,
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 4 + i * ROW;
        let len = if max > 0.0 {
            (b.value / max).clamp(0.0, 1.0) * BAR_W
        } else {
            0.0
        };
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{l}</text><rect x="{bx}" y="{y}" width="{len:.1}" height="16" fill="{colour}"/><text x="{vx:.1}" y="{ty}">{v}</text>"#,
            lx = LABEL_W - 6,
            ty = y + 12,
            l = esc(&b.label),
            bx = LABEL_W,
            vx = LABEL_W as f64 + len + 4.0,
            v = esc(&b.text),
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_proportional_and_escaped() {
        let svg = bars(
            "AEs <by> grade",
            &[
                Bar {
                    label: "grade 1".into(),
                    value: 5.0,
                    text: "5".into(),
                },
                Bar {
                    label: "grade <2>".into(),
                    value: 10.0,
                    text: "10".into(),
                },
            ],
            10.0,
            "#10253f",
        );
        assert!(svg.contains(r#"width="150.0""#), "{svg}");
        assert!(svg.contains(r#"width="300.0""#), "{svg}");
        assert!(svg.contains("grade &lt;2&gt;"));
        assert!(svg.contains("<title>AEs &lt;by&gt; grade</title>"));
    }
}
