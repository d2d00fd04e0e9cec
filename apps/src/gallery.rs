//! A self-contained HTML gallery of a tagging run: thumbnails with their labels and scores, a
//! filter by label, and the files that could not be read.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use rayon::prelude::*;
use tresnet_data::{
    DecodeLimits, Interpolation, PreprocessConfig, ResizeMode, decode_rgb8, resize_for_model,
};

/// One tagged photo.
#[derive(Debug, Clone)]
pub struct GalleryItem {
    /// The photo.
    pub file: String,
    /// `(label, score)` pairs, best first.
    pub labels: Vec<(String, f32)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A JPEG thumbnail (longer side 160 px) as a data URI, or `None` if the photo cannot be read.
fn thumbnail(file: &str) -> Option<String> {
    let image = decode_rgb8(Path::new(file), &DecodeLimits::default()).ok()?;
    let (w, h) = image.dimensions();
    let scale = 160.0 / w.max(h) as f32;
    let cfg = PreprocessConfig {
        height: ((h as f32 * scale).round() as usize).max(1),
        width: ((w as f32 * scale).round() as usize).max(1),
        resize_mode: ResizeMode::Squish,
        crop_pct: 1.0,
        interpolation: Interpolation::Bilinear,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let small = resize_for_model(&image, &cfg).ok()?;
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
        .encode_image(&small)
        .ok()?;
    Some(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The page for `items` and the unreadable `failures` (`(file, reason)`).
pub fn render_gallery(title: &str, items: &[GalleryItem], failures: &[(String, String)]) -> String {
    let mut labels: Vec<&str> = items
        .iter()
        .flat_map(|i| i.labels.iter().map(|l| l.0.as_str()))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let thumbs: Vec<Option<String>> = items.par_iter().map(|i| thumbnail(&i.file)).collect();
    let mut cards = String::new();
    for (item, thumb) in items.iter().zip(thumbs) {
        let names: Vec<&str> = item.labels.iter().map(|l| l.0.as_str()).collect();
        let chips: String = item
            .labels
            .iter()
            .map(|(l, s)| format!("<span class=\"chip\">{} {:.2}</span>", escape(l), s))
            .collect();
        let img = match thumb {
            Some(uri) => format!("<img src=\"{uri}\" alt=\"\">"),
            None => "<div class=\"noimg\">no preview</div>".to_string(),
        };
        let short = Path::new(&item.file)
            .file_name()
            .map_or(item.file.clone(), |n| n.to_string_lossy().into_owned());
        cards.push_str(&format!(
            "<div class=\"card\" data-labels=\"{}\">{img}<div class=\"name\" title=\"{}\">{}</div><div>{chips}</div></div>\n",
            escape(&names.join("|")),
            escape(&item.file),
            escape(&short)
        ));
    }
    let options: String = labels
        .iter()
        .map(|l| format!("<option value=\"{0}\">{0}</option>", escape(l)))
        .collect();
    let bad: String = failures
        .iter()
        .map(|(f, r)| format!("<li><b>{}</b>: {}</li>", escape(f), escape(r)))
        .collect();
    let bad_section = if failures.is_empty() {
        String::new()
    } else {
        format!(
            "<h2>Unreadable files ({})</h2><ul id=\"bad\">{bad}</ul>",
            failures.len()
        )
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #fafafa; }}
#cards {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.card {{ width: 180px; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }}
.card img {{ max-width: 160px; max-height: 160px; display: block; margin: auto; }}
.noimg {{ height: 100px; color: #999; text-align: center; }}
.name {{ font-size: 12px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; margin: 4px 0; }}
.chip {{ display: inline-block; font-size: 11px; background: #e3ecfa; border-radius: 8px; padding: 1px 6px; margin: 1px; }}
</style></head>
<body>
<h1>{title}</h1>
<p>{count} photos. Filter: <select id="filter"><option value="">all labels</option>{options}</select> <span id="shown"></span></p>
<div id="cards">
{cards}</div>
{bad_section}
<script>
const filter = document.getElementById('filter');
function applyFilter() {{
  const want = filter.value;
  let shown = 0;
  for (const card of document.querySelectorAll('.card')) {{
    const labels = card.dataset.labels ? card.dataset.labels.split('|') : [];
    const visible = want === '' || labels.includes(want);
    card.style.display = visible ? '' : 'none';
    if (visible) shown++;
  }}
  document.getElementById('shown').textContent = shown + ' shown';
}}
filter.addEventListener('change', applyFilter);
applyFilter();
</script>
</body></html>
"#,
        title = escape(title),
        count = items.len()
    )
}

/// Writes the gallery atomically.
pub fn write_gallery(
    path: &Path,
    title: &str,
    items: &[GalleryItem],
    failures: &[(String, String)],
) -> Result<()> {
    let html = render_gallery(title, items, failures);
    tresnet_io::atomic_write(path, tresnet_io::Durability::Atomic, |w| {
        std::io::Write::write_all(w, html.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))
}
