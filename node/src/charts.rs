//! Charts for the explorer as inline SVG, drawn on the node (no script, no
//! library): a provider's uptime as a timeline of heights with its slashed
//! downtime marked, and the price index as one line per GPU class. Pure
//! functions of numbers; labels are heights, prices and GPU class keys
//! (which are `A–Z 0–9 -` only), so nothing needs escaping.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Width and height of every chart's drawing box (it scales to the page).
const W: u64 = 600;
const H: u64 = 160;
/// Room for axis labels.
const PAD: u64 = 28;
/// Line colours, one per class in turn.
const COLOURS: [&str; 6] = ["#2457c5", "#c5572a", "#1f7a3a", "#8a3ab9", "#b3261e", "#6b6b6b"];

/// Heights `from..=to` as a bar, with the `down` spans (inclusive) in red.
pub fn uptime_timeline(from: u64, to: u64, down: &[(u64, u64)]) -> String {
    let span = to.saturating_sub(from).max(1);
    let x = |h: u64| PAD + (h.clamp(from, to) - from) * (W - 2 * PAD) / span;
    let mut svg = format!(
        r##"<svg viewBox="0 0 {W} 60" width="100%" role="img" aria-label="uptime from height {from} to {to}"><rect x="{PAD}" y="10" width="{}" height="20" fill="#1f7a3a" opacity="0.75"/>"##,
        W - 2 * PAD
    );
    for (a, b) in down.iter().filter(|(a, b)| *b >= from && *a <= to) {
        let (x0, x1) = (x(*a), x(b.saturating_add(1)).max(x(*a) + 1));
        let _ = write!(
            svg,
            r##"<rect x="{x0}" y="10" width="{}" height="20" fill="#b3261e"><title>slashed: heights {a} to {b}</title></rect>"##,
            x1 - x0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{PAD}" y="48" font-size="11" fill="currentColor">{from}</text><text x="{}" y="48" font-size="11" fill="currentColor" text-anchor="end">{to}</text></svg>"##,
        W - PAD
    );
    svg
}

/// One line per class over auctions: `points` are (class, auction, price in micro-AGR).
pub fn price_lines(points: &[(String, u64, u64)]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let (a0, a1) = points.iter().fold((u64::MAX, 0), |(lo, hi), (_, a, _)| (lo.min(*a), hi.max(*a)));
    let top = points.iter().map(|(_, _, p)| *p).max().unwrap_or(1).max(1);
    let x = |a: u64| PAD + (a - a0) * (W - 2 * PAD) / (a1 - a0).max(1);
    let y = |p: u64| H - PAD - p * (H - 2 * PAD) / top;
    let mut series: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (class, a, p) in points {
        series.entry(class).or_default().push((*a, *p));
    }
    let mut svg = format!(
        r##"<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="clearing prices per class"><line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="currentColor" opacity="0.3"/>"##,
        H - PAD,
        W - PAD,
        H - PAD
    );
    for (i, (class, mut pts)) in series.into_iter().enumerate() {
        pts.sort();
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts.iter().map(|(a, p)| format!("{},{}", x(*a), y(*p))).collect();
        let _ =
            write!(svg, r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##, path.join(" "));
        for (a, p) in &pts {
            let _ = write!(
                svg,
                r##"<circle cx="{}" cy="{}" r="3" fill="{colour}"><title>{class}, auction {a}: {} AGR</title></circle>"##,
                x(*a),
                y(*p),
                agora_protocol::Amount(*p).to_string().trim_end_matches(" AGR")
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" fill="{colour}">{class}</text>"##,
            PAD + 4,
            14 + 13 * i as u64
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{PAD}" y="{}" font-size="11" fill="currentColor">auction {a0}</text><text x="{}" y="{}" font-size="11" fill="currentColor" text-anchor="end">auction {a1}</text><text x="2" y="{}" font-size="11" fill="currentColor">{}</text></svg>"##,
        H - 8,
        W - PAD,
        H - 8,
        PAD,
        agora_protocol::Amount(top)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_marks_each_slashed_span_within_its_range() {
        let svg = uptime_timeline(100, 200, &[(120, 129), (190, 250), (10, 20)]);
        assert_eq!(svg.matches("slashed: heights").count(), 2, "the span before the range is left out: {svg}");
        assert!(svg.contains("heights 120 to 129") && svg.contains(">100<") && svg.contains(">200<"));
        assert!(!uptime_timeline(5, 5, &[]).contains("slashed"), "one height, never down");
    }

    #[test]
    fn price_lines_draw_one_polyline_per_class_in_auction_order() {
        let pts = vec![
            ("H100-80GB".to_string(), 3, 1_500_000),
            ("H100-80GB".to_string(), 1, 2_000_000),
            ("A100-40GB".to_string(), 2, 750_000),
        ];
        let svg = price_lines(&pts);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("H100-80GB, auction 1: 2 AGR") && svg.contains("A100-40GB, auction 2: 0.75 AGR"));
        // Auction 1 is left of auction 3 on the H100 line.
        let line = svg.split("<polyline").nth(2).unwrap();
        let xs: Vec<u64> = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(xs[0] < xs[1], "{xs:?}");
        assert_eq!(price_lines(&[]), "");
    }
}
