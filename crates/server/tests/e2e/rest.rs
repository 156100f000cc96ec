//! The REST/JSON gateway over real HTTP.

#[test]
fn explore() {
    use opsd_proto::opsd::v1 as pb;
    for text in [
        r#"{"foo": 1}"#,
        r#"{"description": 1}"#,
        r#"{"description": "x",}"#,
        r#"not json"#,
        r#"{"leaseDuration": "abc"}"#,
        r#"{"leaseDuration": "-1s"}"#,
        r#"{"deadline": "2020-13-01T00:00:00Z"}"#,
        r#"{"metadata": {"@type": "type.googleapis.com/foo.Bar"}}"#,
        r#"{"metadata": {"a": 1}}"#,
        r#"{"cancellationPolicy": "NOPE"}"#,
        r#"{"cancellationPolicy": 7}"#,
        r#"{"exclusive": "true"}"#,
        r#"[]"#,
        r#"{} {}"#,
        r#""#,
        r#"{"description": "x", "description": "y"}"#,
        r#"{"metadata": {"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"a": 1}}}"#,
    ] {
        println!("{text} => {:?}", opsd_proto::json::from_json::<pb::CreateOperationRequest>(text).map_err(|e| e.to_string()));
    }
    for text in [r#"{"pageSize": "10"}"#, r#"{"pageSize": 1.0}"#, r#"{"pageSize": 1e10}"#, r#"{"state": "STATE_FILTER_DONE"}"#] {
        println!("{text} => {:?}", opsd_proto::json::from_json::<pb::ListOperationsRequest>(text).map_err(|e| e.to_string()));
    }
    for text in [r#"{"progress": {"workDone": "12345678901234"}}"#, r#"{"progress": {"workDone": 5}}"#, r#"{"progress": {"steps": [{"state": 99}]}}"#] {
        println!("{text} => {:?}", opsd_proto::json::from_json::<pb::UpdateMetadataRequest>(text).map_err(|e| e.to_string()));
    }
    for s in ["30s", "1.5s", "-1s", "1m", "0.000000001s", "1", ""] {
        println!("dur {s} => {:?}", s.parse::<prost_types::Duration>());
    }
    for s in ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00+03:00", "2024-01-01t00:00:00z", "2024-01-01", "2024-01-01T00:00:00.123456789Z"] {
        println!("ts {s} => {:?}", s.parse::<prost_types::Timestamp>());
    }
}
