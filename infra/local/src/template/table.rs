//! Creating the table the template describes in DynamoDB Local, stream and TTL included.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};

use super::spec::TableSpec;

impl TableSpec {
    /// Creates the table (stream and TTL included) unless it exists. Returns whether it
    /// was created.
    pub async fn create(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<bool, aws_sdk_dynamodb::Error> {
        match client.describe_table().table_name(name).send().await {
            Ok(_) => return Ok(false),
            Err(err) => {
                let err = aws_sdk_dynamodb::Error::from(err);
                if !matches!(err, aws_sdk_dynamodb::Error::ResourceNotFoundException(_)) {
                    return Err(err);
                }
            }
        }
        let mut request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest);
        for (attribute, kind) in &self.attributes {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::from(kind.as_str()))
                    .build()
                    .expect("name and type are set"),
            );
        }
        for (attribute, kind) in &self.key_schema {
            request = request.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attribute)
                    .key_type(KeyType::from(kind.as_str()))
                    .build()
                    .expect("name and type are set"),
            );
        }
        if let Some(view) = &self.stream_view_type {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .expect("enabled is set"),
            );
        }
        request.send().await?;
        if let Some(attribute) = &self.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .expect("name and flag are set"),
                )
                .send()
                .await?;
        }
        Ok(true)
    }
}
