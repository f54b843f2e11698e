//! The OpenAPI document: every operation and schema, the bearer scheme and the error
//! answers common to every operation.

use super::*;

pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub(super) struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The error answers any operation can give, documented on every one: 400 for parameters or a
/// body that do not parse, 401 without a valid token, 403 for a token of the wrong scope, 404 for
/// what does not exist, and 413 for a body over `max_body` where there is a body.
pub(super) struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let error = |what: &str| {
            let mut r = Response::new(what);
            r.content.insert("application/json".into(), Content::new(Some(Ref::from_schema_name("ErrorBody"))));
            RefOr::T(r)
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let mut common = vec![
                    ("400", "Parameters or a body that do not parse"),
                    ("401", "No valid bearer token"),
                    ("403", "The token may not do this"),
                    ("404", "Not found"),
                ];
                if operation.request_body.is_some() {
                    common.push(("413", "The body is larger than max_body"));
                    common.push(("415", "The body is not JSON"));
                }
                for (status, what) in common {
                    operation.responses.responses.entry(status.into()).or_insert_with(|| error(what));
                }
            }
        }
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi, Debug)]
#[openapi(
    info(title = "Cohort", description = "The Cohort control plane: tenants, data models, segments, runs and memberships."),
    paths(
        create_tenant, list_tenants, get_tenant, create_token, list_tokens, revoke_token, put_model, get_model, put_segment, get_segment,
        delete_segment, list_segments, enqueue_run, list_runs, get_run, cancel_run, get_members, get_history,
        get_history_record, get_estimator, refit_estimator, list_alerts, get_alert, create_silence, list_silences,
        expire_silence, create_receiver, list_receivers, delete_receiver, get_triage, list_triage_reports, get_triage_report
    ),
    components(schemas(ErrorBody, ErrorDetail, Tenant, TenantCreated, TokenCreated, TokenView, TokenList, TenantPage, ModelView, PutSegment,
        SegmentView, SegmentPage, EnqueueRun, JobView, Transition, WaitingView, AttemptView, JobPage, MembersPage, RunGoneBody, RunGoneError, RunGoneDetails,
        HistoryRecord, HistoryPage,
        KeyChange, HistoryDetail, JobStatus, CreateTenant, EstimatorStatus, RegimeStatus, Accuracy, EstimateView,
        AlertView, AlertEventView, AlertPage, SilenceView, CreateSilence, ReceiverView, CreateReceiver, TriageReportPage,
        crate::triage::StoredReport, crate::store::SnapshotView, crate::storage::TenantStorage)),
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;
