//! Email: records each confirmation, as upstream's dummy email service only
//! logs it.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use super::Rpc;
use super::control::{Control, lock};
use crate::proto::hipstershop::email_service_server::{EmailService, EmailServiceServer};
use crate::proto::hipstershop::{Empty, SendOrderConfirmationRequest};

/// The email stand-in: read the confirmations it was asked to send.
#[derive(Debug, Clone, Default)]
pub struct EmailStandIn {
    sent: Arc<Mutex<Vec<SendOrderConfirmationRequest>>>,
}

impl EmailStandIn {
    /// Every confirmation request received (and not failed), in order.
    pub fn sent(&self) -> Vec<SendOrderConfirmationRequest> {
        lock(&self.sent).clone()
    }

    pub(super) fn server(&self, control: Arc<Control>) -> EmailServiceServer<EmailServer> {
        EmailServiceServer::new(EmailServer {
            sent: Arc::clone(&self.sent),
            control,
        })
    }
}

/// The gRPC face of [`EmailStandIn`].
#[derive(Debug)]
pub(super) struct EmailServer {
    sent: Arc<Mutex<Vec<SendOrderConfirmationRequest>>>,
    control: Arc<Control>,
}

#[tonic::async_trait]
impl EmailService for EmailServer {
    async fn send_order_confirmation(
        &self,
        request: Request<SendOrderConfirmationRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.control
            .enter(Rpc::SendOrderConfirmation, request.metadata())
            .await?;
        lock(&self.sent).push(request.into_inner());
        Ok(Response::new(Empty {}))
    }
}
