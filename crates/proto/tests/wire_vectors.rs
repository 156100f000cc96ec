//! Byte compatibility with the official SDK: `tests/wire-vectors` holds messages
//! encoded by the stubs of the Yandex Cloud Python SDK (a foreign implementation).
//! Decoding, re-encoding and the proto3 JSON mapping must all agree with them.

use std::path::PathBuf;

use opsd_proto::json;
use opsd_proto::yandex::cloud::{endpoint, iam, operation};
use prost::Message;
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/wire-vectors")
}

/// Decodes with the generated type, re-encodes, and returns the JSON mapping of
/// the decoded value and of the value parsed back from the reference JSON.
fn check<M: Message + prost::Name + Default + Clone + PartialEq + std::fmt::Debug>(
    bin: &[u8],
    reference_json: &str,
    canonical: fn(M) -> M,
) -> (Value, M) {
    let decoded = M::decode(bin).expect("decodes as the generated type");
    assert_eq!(
        decoded.encode_to_vec(),
        bin,
        "re-encoding gives the same bytes"
    );

    // Map entries (Struct fields inside Any) may come in any order on the wire,
    // so values parsed from JSON are compared in canonical (sorted) form.
    let from_json: M = canonical(json::from_json(reference_json).expect("reference json parses"));
    let decoded_canonical = canonical(decoded.clone());
    assert_eq!(
        from_json, decoded_canonical,
        "reference json and binary carry the same value"
    );
    assert_eq!(from_json.encode_to_vec(), decoded_canonical.encode_to_vec());

    (json::to_json(&decoded).expect("prints as json"), decoded)
}

fn same<M>(message: M) -> M {
    message
}

/// Re-encodes Struct payloads with their fields sorted by key, as prost's Struct does.
fn sorted_structs(mut op: operation::Operation) -> operation::Operation {
    fn sort(any: &mut prost_types::Any) {
        if any.type_url == "type.googleapis.com/google.protobuf.Struct" {
            let value = prost_types::Struct::decode(any.value.as_slice()).unwrap();
            any.value = value.encode_to_vec();
        }
    }
    if let Some(metadata) = op.metadata.as_mut() {
        sort(metadata);
    }
    if let Some(operation::operation::Result::Response(response)) = op.result.as_mut() {
        sort(response);
    }
    op
}

/// Numbers compare by value: correct printers differ on `2` vs `2.0`.
fn normalize(value: Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        other => other,
    }
}

#[test]
fn every_vector_round_trips_in_binary_and_json() {
    let dir = vectors_dir();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let entries = manifest.as_object().unwrap();
    assert!(entries.len() >= 10, "the manifest lists every vector");

    for (name, entry) in entries {
        let bin = std::fs::read(dir.join(entry["binary"].as_str().unwrap())).unwrap();
        assert_eq!(
            bin.len() as u64,
            entry["bytes"].as_u64().unwrap(),
            "{name}: size"
        );
        let reference =
            std::fs::read_to_string(dir.join(entry["proto3_json"].as_str().unwrap())).unwrap();
        let printed = match entry["message"].as_str().unwrap() {
            "yandex.cloud.operation.Operation" => {
                check::<operation::Operation>(&bin, &reference, sorted_structs).0
            }
            "yandex.cloud.operation.GetOperationRequest" => {
                check::<operation::GetOperationRequest>(&bin, &reference, same).0
            }
            "yandex.cloud.operation.CancelOperationRequest" => {
                check::<operation::CancelOperationRequest>(&bin, &reference, same).0
            }
            "yandex.cloud.endpoint.ApiEndpoint" => {
                check::<endpoint::ApiEndpoint>(&bin, &reference, same).0
            }
            "yandex.cloud.endpoint.GetApiEndpointRequest" => {
                check::<endpoint::GetApiEndpointRequest>(&bin, &reference, same).0
            }
            "yandex.cloud.endpoint.ListApiEndpointsResponse" => {
                check::<endpoint::ListApiEndpointsResponse>(&bin, &reference, same).0
            }
            "yandex.cloud.iam.v1.CreateIamTokenRequest" => {
                check::<iam::v1::CreateIamTokenRequest>(&bin, &reference, same).0
            }
            "yandex.cloud.iam.v1.CreateIamTokenResponse" => {
                check::<iam::v1::CreateIamTokenResponse>(&bin, &reference, same).0
            }
            other => panic!("{name}: no test for message {other}"),
        };
        let reference: Value = serde_json::from_str(&reference).unwrap();
        assert_eq!(
            normalize(printed),
            normalize(reference),
            "{name}: proto3 json"
        );
    }
}

#[test]
fn fields_land_where_the_contract_says() {
    let bin = std::fs::read(vectors_dir().join("operation_done_response.bin")).unwrap();
    let op = operation::Operation::decode(bin.as_slice()).unwrap();
    assert_eq!(op.id, "fhm0a1b2c3d4e5f6g7h8");
    assert!(op.done);
    assert_eq!(op.created_by, "aje1234567890abcdefg");
    assert!(op.created_at.is_some() && op.modified_at.is_some());
    assert_eq!(
        op.metadata.as_ref().unwrap().type_url,
        "type.googleapis.com/google.protobuf.Struct"
    );
    match op.result {
        Some(operation::operation::Result::Response(any)) => {
            assert!(any.type_url.starts_with("type.googleapis.com/"))
        }
        other => panic!("expected a response, got {other:?}"),
    }

    let bin = std::fs::read(vectors_dir().join("operation_cancelled.bin")).unwrap();
    let op = operation::Operation::decode(bin.as_slice()).unwrap();
    match op.result {
        Some(operation::operation::Result::Error(status)) => assert_eq!(status.code, 1),
        other => panic!("expected an error, got {other:?}"),
    }

    let bin = std::fs::read(vectors_dir().join("operation_description_256_cyrillic.bin")).unwrap();
    let op = operation::Operation::decode(bin.as_slice()).unwrap();
    assert_eq!(op.description.chars().count(), 256);
    assert_eq!(op.description.len(), 512);
}

#[test]
fn the_iam_exchange_fields_land_where_the_contract_says() {
    use iam::v1::create_iam_token_request::Identity;
    let read = |name: &str| std::fs::read(vectors_dir().join(name)).unwrap();
    let jwt =
        iam::v1::CreateIamTokenRequest::decode(read("create_iam_token_request_jwt.bin").as_slice())
            .unwrap();
    assert!(matches!(jwt.identity, Some(Identity::Jwt(ref t)) if t.starts_with("eyJ")));
    let oauth = iam::v1::CreateIamTokenRequest::decode(
        read("create_iam_token_request_oauth.bin").as_slice(),
    )
    .unwrap();
    assert!(matches!(
        oauth.identity,
        Some(Identity::YandexPassportOauthToken(ref t)) if t.starts_with("y0_")
    ));
    let response =
        iam::v1::CreateIamTokenResponse::decode(read("create_iam_token_response.bin").as_slice())
            .unwrap();
    assert_eq!(response.expires_at.unwrap().seconds, 1_732_716_163);
    assert!(!response.iam_token.is_empty());
}

#[test]
fn statuses_with_standard_details_print_as_json() {
    let bad_request = tonic_types::pb::BadRequest {
        field_violations: vec![tonic_types::pb::bad_request::FieldViolation {
            field: "description".into(),
            description: "too long".into(),
            ..Default::default()
        }],
    };
    let resource = tonic_types::pb::ResourceInfo {
        resource_type: "operation".into(),
        resource_name: "ops00000000000000001".into(),
        ..Default::default()
    };
    let op = operation::Operation {
        id: "ops00000000000000002".into(),
        done: true,
        result: Some(operation::operation::Result::Error(opsd_proto::RpcStatus {
            code: 10,
            message: "busy".into(),
            details: vec![
                prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                    value: bad_request.encode_to_vec(),
                },
                prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.ResourceInfo".into(),
                    value: resource.encode_to_vec(),
                },
            ],
        })),
        ..Default::default()
    };
    let printed = json::to_json(&op).unwrap();
    let details = &printed["error"]["details"];
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(details[0]["fieldViolations"][0]["field"], "description");
    assert_eq!(details[1]["resourceName"], "ops00000000000000001");
}

#[test]
fn payloads_of_unknown_types_print_as_base64_under_their_type_url() {
    let op = operation::Operation {
        id: "ops00000000000000003".into(),
        metadata: Some(prost_types::Any {
            type_url: "type.googleapis.com/acme.compute.v1.CreateInstanceMetadata".into(),
            value: vec![10, 3, 118, 109, 49],
        }),
        result: Some(operation::operation::Result::Error(opsd_proto::RpcStatus {
            code: 9,
            message: "quota".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/acme.QuotaDetail".into(),
                value: vec![],
            }],
        })),
        ..Default::default()
    };
    let printed = json::to_json(&op).expect("unknown payload types do not fail the message");
    assert_eq!(
        printed["metadata"],
        serde_json::json!({
            "@type": "type.googleapis.com/acme.compute.v1.CreateInstanceMetadata",
            "value": "CgN2bTE="
        })
    );
    assert_eq!(
        printed["error"]["details"][0],
        serde_json::json!({"@type": "type.googleapis.com/acme.QuotaDetail", "value": ""})
    );
    assert_eq!(printed["id"], "ops00000000000000003");
}

#[test]
fn payloads_that_are_not_what_their_type_url_says_print_as_base64() {
    let op = operation::Operation {
        id: "ops00000000000000004".into(),
        metadata: Some(prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Struct".into(),
            value: vec![0xff, 0xff, 0xff],
        }),
        ..Default::default()
    };
    let printed = json::to_json(&op).expect("a bad payload does not fail the message");
    assert_eq!(printed["metadata"]["value"], "////");
}
