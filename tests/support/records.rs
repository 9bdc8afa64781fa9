//! Run records against the schemas the project ships.

use std::path::Path;

/// The schema file `name` in `schema/`, compiled, with `format` checked (uuid, date-time,
/// uri).
pub(crate) fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(name);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

/// Every violation of `record` against `validator`, as `path: message` lines.
pub(crate) fn violations(
    validator: &jsonschema::Validator,
    record: &serde_json::Value,
) -> Vec<String> {
    validator
        .iter_errors(record)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The records of an NDJSON file, each checked against v1.3 (panics naming the line and
/// what is wrong).
pub(crate) fn read_valid(path: &Path) -> Vec<serde_json::Value> {
    let v13 = validator("pipeline_run.v1.3.json");
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let record: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON: {e}", path.display(), i + 1));
            let bad = violations(&v13, &record);
            assert!(
                bad.is_empty(),
                "{}:{}: the record violates pipeline_run.v1.3:\n{}\n{line}",
                path.display(),
                i + 1,
                bad.join("\n")
            );
            record
        })
        .collect()
}
