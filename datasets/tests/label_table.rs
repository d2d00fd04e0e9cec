//! Label files beside a flat image folder (`file,labels` CSV, TSV), as `finetune --labels` and
//! `top1-eval --labels` read them: single and multi-label rows, headers, commas in file names,
//! and every malformed or inconsistent line refused with the file and line named.

use std::path::Path;

use tresnet_data::LabelTable;

fn folder(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        let path = dir.path().join("images").join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not decoded here").unwrap();
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn csv_and_tsv_rows_with_one_or_several_labels() {
    let dir = folder(&["a.jpg", "b, the second.jpg", "sub/c.png"]);
    let images = dir.path().join("images");
    let csv = write(
        dir.path(),
        "labels.csv",
        "file,labels\r\na.jpg,cat\r\nb, the second.jpg,dog; cat\r\n\r\nsub/c.png,bird\r\n",
    );
    let table = LabelTable::read(&csv, &images).unwrap();
    assert_eq!(table.rows.len(), 3);
    assert_eq!(table.rows[1].path, images.join("b, the second.jpg"));
    assert_eq!(table.rows[1].labels, ["dog", "cat"]);
    assert!(table.is_multi_label());
    assert_eq!(table.label_names(), ["bird", "cat", "dog"]);

    let tsv = write(
        dir.path(),
        "labels.tsv",
        "a.jpg\tcat\nb, the second.jpg\tdog\n",
    );
    let table = LabelTable::read(&tsv, &images).unwrap();
    assert!(!table.is_multi_label());
    assert_eq!(table.label_names(), ["cat", "dog"]);
}

#[test]
fn bad_lines_are_refused_by_file_and_line() {
    let dir = folder(&["a.jpg", "b.jpg"]);
    let images = dir.path().join("images");
    let cases = [
        ("a.jpg,cat\njust a name\n", "line 2: expected `file,labels`"),
        ("a.jpg,cat\nb.jpg, ; \n", "line 2: no label"),
        (
            "../outside.jpg,cat\n",
            "line 1: `../outside.jpg` is not a file inside",
        ),
        (
            "/etc/passwd,cat\n",
            "line 1: `/etc/passwd` is not a file inside",
        ),
        ("a.jpg,cat\na.jpg,dog\n", "line 2: `a.jpg` is listed twice"),
        (
            "a.jpg,cat\ngone.jpg,dog\nalso.jpg,dog\n",
            "2 listed images do not exist",
        ),
        ("file,labels\n", "no labelled images"),
    ];
    for (text, want) in cases {
        let path = write(dir.path(), "labels.csv", text);
        let err = LabelTable::read(&path, &images).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("labels.csv"),
            "{text:?}: {err}"
        );
    }
    let err = LabelTable::read(&dir.path().join("none.csv"), &images)
        .unwrap_err()
        .to_string();
    assert!(err.contains("none.csv"), "{err}");
}
