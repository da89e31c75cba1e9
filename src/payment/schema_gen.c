/* GENERATED FILE, do not edit: the rules of the Payment definition of
 * spec/seed-swagger.yml, as the nodes of schema.h.
 * Regenerate with `make schema`, which runs
 *   /usr/bin/python3 tools/gen_schema.py spec/seed-swagger.yml > src/payment/schema_gen.c
 * and `make check-schema` fails when this file is stale. */
#include "payment/schema.h"

#include <stddef.h>

const char *const schema_patterns[] = {
    "^[0-9.]{0,20}$",
    "^[A-Za-z_]*$",
};
const size_t schema_pattern_count = 2;

static const char *const schema_enum_AccountNumberCode[] = {
    "IBAN",
    "BBAN",
    NULL,
};

static const struct schema_node schema_def_BeneficiaryDebtorAccountHoldingEntity_bank_address_item = {
    .type = SCHEMA_STRING,
};

static const char *const schema_enum_BankIdCode[] = {
    "SWBIC",
    "GBDSC",
    "BE",
    "FR",
    "DEBLZ",
    "GRBIC",
    "ITNCC",
    "PLKNR",
    "PTNCC",
    "ESNCC",
    "CHBCC",
    NULL,
};

static const struct schema_node schema_def_BeneficiaryDebtorAccountHoldingEntity_members[] = {
    {.name = "bank_address", .type = SCHEMA_ARRAY,
        .items = &schema_def_BeneficiaryDebtorAccountHoldingEntity_bank_address_item},
    {.name = "bank_id", .type = SCHEMA_STRING, .max_length = 11},
    {.name = "bank_id_code", .type = SCHEMA_STRING, .enum_values = schema_enum_BankIdCode,
        .enum_text = "SWBIC, GBDSC, BE, FR, DEBLZ, GRBIC, ITNCC, PLKNR, PTNCC, ESNCC, CHBCC"},
    {.name = "bank_name", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "bank_party_id", .type = SCHEMA_STRING, .max_length = 35},
};

static const struct schema_node schema_attributes_beneficiary_party_address_item = {
    .type = SCHEMA_STRING,
};

static const struct schema_node schema_attributes_beneficiary_party_members[] = {
    {.name = "account_name", .type = SCHEMA_STRING, .max_length = 40},
    {.name = "account_number", .type = SCHEMA_STRING, .max_length = 34},
    {.name = "account_number_code", .type = SCHEMA_STRING,
        .enum_values = schema_enum_AccountNumberCode, .enum_text = "IBAN, BBAN"},
    {.name = "account_type", .type = SCHEMA_INTEGER},
    {.name = "account_with", .type = SCHEMA_OBJECT,
        .properties = schema_def_BeneficiaryDebtorAccountHoldingEntity_members,
        .property_count = 5},
    {.name = "address", .type = SCHEMA_ARRAY,
        .items = &schema_attributes_beneficiary_party_address_item},
    {.name = "birth_city", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "birth_country", .type = SCHEMA_STRING, .max_length = 2},
    {.name = "birth_date", .type = SCHEMA_STRING, .format = SCHEMA_FORMAT_DATE},
    {.name = "birth_province", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "country", .type = SCHEMA_STRING, .max_length = 2},
    {.name = "name", .type = SCHEMA_STRING, .max_length = 70},
    {.name = "organisation_identification", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "organisation_identification_code", .type = SCHEMA_STRING, .max_length = 4},
    {.name = "organisation_identification_issuer", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "telephone_number", .type = SCHEMA_STRING, .max_length = 16},
};

static const struct schema_node schema_def_ChargesInformation_sender_charges_item_members[] = {
    {.name = "amount", .type = SCHEMA_STRING},
    {.name = "currency", .type = SCHEMA_STRING},
};

static const struct schema_node schema_def_ChargesInformation_sender_charges_item = {
    .type = SCHEMA_OBJECT, .properties = schema_def_ChargesInformation_sender_charges_item_members,
    .property_count = 2,
};

static const struct schema_node schema_def_ChargesInformation_members[] = {
    {.name = "bearer_code", .type = SCHEMA_STRING},
    {.name = "receiver_charges_amount", .type = SCHEMA_STRING},
    {.name = "receiver_charges_currency", .type = SCHEMA_STRING},
    {.name = "sender_charges", .type = SCHEMA_ARRAY,
        .items = &schema_def_ChargesInformation_sender_charges_item},
};

static const struct schema_node schema_attributes_debtor_party_address_item = {
    .type = SCHEMA_STRING,
};

static const struct schema_node schema_attributes_debtor_party_members[] = {
    {.name = "account_name", .type = SCHEMA_STRING, .max_length = 40},
    {.name = "account_number", .type = SCHEMA_STRING, .max_length = 34},
    {.name = "account_number_code", .type = SCHEMA_STRING,
        .enum_values = schema_enum_AccountNumberCode, .enum_text = "IBAN, BBAN"},
    {.name = "account_with", .type = SCHEMA_OBJECT,
        .properties = schema_def_BeneficiaryDebtorAccountHoldingEntity_members,
        .property_count = 5},
    {.name = "address", .type = SCHEMA_ARRAY,
        .items = &schema_attributes_debtor_party_address_item},
    {.name = "birth_city", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "birth_country", .type = SCHEMA_STRING, .max_length = 2},
    {.name = "birth_date", .type = SCHEMA_STRING, .format = SCHEMA_FORMAT_DATE},
    {.name = "birth_province", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "country", .type = SCHEMA_STRING, .max_length = 2},
    {.name = "customer_id", .type = SCHEMA_STRING, .max_length = 11},
    {.name = "customer_id_code", .type = SCHEMA_STRING, .max_length = 5},
    {.name = "name", .type = SCHEMA_STRING, .max_length = 70},
    {.name = "organisation_identification", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "organisation_identification_code", .type = SCHEMA_STRING, .max_length = 4},
    {.name = "organisation_identification_issuer", .type = SCHEMA_STRING, .max_length = 35},
};

static const struct schema_node schema_attributes_fx_members[] = {
    {.name = "contract_reference", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "exchange_rate", .type = SCHEMA_STRING},
    {.name = "original_amount", .type = SCHEMA_STRING},
    {.name = "original_currency", .type = SCHEMA_STRING, .max_length = 3},
};

static const struct schema_node schema_def_IntermediaryBankAccountHoldingEntity_bank_address_item = {
    .type = SCHEMA_STRING,
};

static const struct schema_node schema_def_IntermediaryBankAccountHoldingEntity_members[] = {
    {.name = "bank_address", .type = SCHEMA_ARRAY,
        .items = &schema_def_IntermediaryBankAccountHoldingEntity_bank_address_item},
    {.name = "bank_id", .type = SCHEMA_STRING, .max_length = 11},
    {.name = "bank_id_code", .type = SCHEMA_STRING, .enum_values = schema_enum_BankIdCode,
        .enum_text = "SWBIC, GBDSC, BE, FR, DEBLZ, GRBIC, ITNCC, PLKNR, PTNCC, ESNCC, CHBCC"},
    {.name = "bank_name", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "bank_party_id", .type = SCHEMA_STRING, .max_length = 37},
};

static const struct schema_node schema_def_ReceiversCorrespondentAccountHoldingEntity_bank_address_item = {
    .type = SCHEMA_STRING, .max_length = 140,
};

static const struct schema_node schema_def_ReceiversCorrespondentAccountHoldingEntity_members[] = {
    {.name = "bank_address", .type = SCHEMA_ARRAY,
        .items = &schema_def_ReceiversCorrespondentAccountHoldingEntity_bank_address_item},
    {.name = "bank_id", .type = SCHEMA_STRING, .max_length = 11},
    {.name = "bank_id_code", .type = SCHEMA_STRING, .enum_values = schema_enum_BankIdCode,
        .enum_text = "SWBIC, GBDSC, BE, FR, DEBLZ, GRBIC, ITNCC, PLKNR, PTNCC, ESNCC, CHBCC"},
    {.name = "bank_name", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "bank_party_id", .type = SCHEMA_STRING, .max_length = 37},
};

static const struct schema_node schema_def_ReimbursementAccountHoldingEntity_bank_address_item = {
    .type = SCHEMA_STRING,
};

static const struct schema_node schema_def_ReimbursementAccountHoldingEntity_members[] = {
    {.name = "bank_address", .type = SCHEMA_ARRAY,
        .items = &schema_def_ReimbursementAccountHoldingEntity_bank_address_item},
    {.name = "bank_id", .type = SCHEMA_STRING, .max_length = 11},
    {.name = "bank_id_code", .type = SCHEMA_STRING, .enum_values = schema_enum_BankIdCode,
        .enum_text = "SWBIC, GBDSC, BE, FR, DEBLZ, GRBIC, ITNCC, PLKNR, PTNCC, ESNCC, CHBCC"},
    {.name = "bank_name", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "bank_party_id", .type = SCHEMA_STRING, .max_length = 37},
};

static const struct schema_node schema_def_SendersCorrespondentAccountHoldingEntity_bank_address_item = {
    .type = SCHEMA_STRING,
};

static const struct schema_node schema_def_SendersCorrespondentAccountHoldingEntity_members[] = {
    {.name = "bank_address", .type = SCHEMA_ARRAY,
        .items = &schema_def_SendersCorrespondentAccountHoldingEntity_bank_address_item},
    {.name = "bank_id", .type = SCHEMA_STRING, .max_length = 11},
    {.name = "bank_id_code", .type = SCHEMA_STRING, .enum_values = schema_enum_BankIdCode,
        .enum_text = "SWBIC, GBDSC, BE, FR, DEBLZ, GRBIC, ITNCC, PLKNR, PTNCC, ESNCC, CHBCC"},
    {.name = "bank_name", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "bank_party_id", .type = SCHEMA_STRING, .max_length = 37},
};

static const struct schema_node schema_attributes_structured_reference_members[] = {
    {.name = "issuer", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "reference", .type = SCHEMA_STRING, .max_length = 35},
};

static const struct schema_node schema_attributes_swift_header_members[] = {
    {.name = "destination", .type = SCHEMA_STRING, .max_length = 12},
    {.name = "message_type", .type = SCHEMA_STRING, .max_length = 5},
    {.name = "priority", .type = SCHEMA_STRING, .max_length = 8},
    {.name = "recipient", .type = SCHEMA_STRING, .max_length = 8},
    {.name = "source", .type = SCHEMA_STRING, .max_length = 8},
    {.name = "user_reference", .type = SCHEMA_STRING, .max_length = 16},
};

static const struct schema_node schema_attributes_swift_members[] = {
    {.name = "bank_operation_code", .type = SCHEMA_STRING, .max_length = 4},
    {.name = "header", .type = SCHEMA_OBJECT, .properties = schema_attributes_swift_header_members,
        .property_count = 6},
    {.name = "instruction_code", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "sender_receiver_information", .type = SCHEMA_STRING, .max_length = 210},
    {.name = "time_indication", .type = SCHEMA_STRING},
};

static const struct schema_node schema_def_UltimateEntity_members[] = {
    {.name = "address", .type = SCHEMA_STRING},
    {.name = "birth_city", .type = SCHEMA_STRING},
    {.name = "birth_country", .type = SCHEMA_STRING},
    {.name = "birth_date", .type = SCHEMA_STRING, .format = SCHEMA_FORMAT_DATE},
    {.name = "birth_province", .type = SCHEMA_STRING},
    {.name = "country", .type = SCHEMA_STRING},
    {.name = "name", .type = SCHEMA_STRING},
    {.name = "organisation_identification", .type = SCHEMA_STRING},
    {.name = "organisation_identification_code", .type = SCHEMA_STRING},
    {.name = "organisation_identification_issuer", .type = SCHEMA_STRING},
};

static const struct schema_node schema_attributes_members[] = {
    {.name = "amount", .type = SCHEMA_STRING, .pattern = "^[0-9.]{0,20}$"},
    {.name = "batch_booking_indicator", .type = SCHEMA_STRING},
    {.name = "batch_id", .type = SCHEMA_STRING},
    {.name = "batch_type", .type = SCHEMA_STRING},
    {.name = "beneficiary_party", .type = SCHEMA_OBJECT,
        .properties = schema_attributes_beneficiary_party_members, .property_count = 16},
    {.name = "category_purpose", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "category_purpose_coded", .type = SCHEMA_STRING, .max_length = 4},
    {.name = "charges_information", .type = SCHEMA_OBJECT,
        .properties = schema_def_ChargesInformation_members, .property_count = 4},
    {.name = "clearing_id", .type = SCHEMA_STRING, .max_length = 6},
    {.name = "currency", .type = SCHEMA_STRING, .max_length = 3},
    {.name = "debtor_party", .type = SCHEMA_OBJECT,
        .properties = schema_attributes_debtor_party_members, .property_count = 16},
    {.name = "end_to_end_reference", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "file_number", .type = SCHEMA_STRING},
    {.name = "fx", .type = SCHEMA_OBJECT, .properties = schema_attributes_fx_members,
        .property_count = 4},
    {.name = "instruction_id", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "intermediary_bank", .type = SCHEMA_OBJECT,
        .properties = schema_def_IntermediaryBankAccountHoldingEntity_members, .property_count = 5},
    {.name = "numeric_reference", .type = SCHEMA_STRING, .max_length = 4},
    {.name = "payment_acceptance_datetime", .type = SCHEMA_STRING,
        .format = SCHEMA_FORMAT_DATE_TIME},
    {.name = "payment_purpose", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "payment_purpose_coded", .type = SCHEMA_STRING, .max_length = 4},
    {.name = "payment_scheme", .type = SCHEMA_STRING},
    {.name = "payment_type", .type = SCHEMA_STRING},
    {.name = "processing_date", .type = SCHEMA_STRING, .format = SCHEMA_FORMAT_DATE},
    {.name = "receivers_correspondent", .type = SCHEMA_OBJECT,
        .properties = schema_def_ReceiversCorrespondentAccountHoldingEntity_members,
        .property_count = 5},
    {.name = "reference", .type = SCHEMA_STRING, .max_length = 18},
    {.name = "regulatory_reporting", .type = SCHEMA_STRING, .max_length = 105},
    {.name = "reimbursement", .type = SCHEMA_OBJECT,
        .properties = schema_def_ReimbursementAccountHoldingEntity_members, .property_count = 5},
    {.name = "remittance_information", .type = SCHEMA_STRING, .max_length = 140},
    {.name = "scheme_payment_sub_type", .type = SCHEMA_STRING},
    {.name = "scheme_payment_type", .type = SCHEMA_STRING},
    {.name = "scheme_processing_date", .type = SCHEMA_STRING, .format = SCHEMA_FORMAT_DATE},
    {.name = "scheme_transaction_id", .type = SCHEMA_STRING, .max_length = 35},
    {.name = "senders_correspondent", .type = SCHEMA_OBJECT,
        .properties = schema_def_SendersCorrespondentAccountHoldingEntity_members,
        .property_count = 5},
    {.name = "structured_reference", .type = SCHEMA_OBJECT,
        .properties = schema_attributes_structured_reference_members, .property_count = 2},
    {.name = "swift", .type = SCHEMA_OBJECT, .properties = schema_attributes_swift_members,
        .property_count = 5},
    {.name = "ultimate_beneficiary", .type = SCHEMA_OBJECT,
        .properties = schema_def_UltimateEntity_members, .property_count = 10},
    {.name = "ultimate_debtor", .type = SCHEMA_OBJECT,
        .properties = schema_def_UltimateEntity_members, .property_count = 10},
    {.name = "unique_scheme_id", .type = SCHEMA_STRING, .max_length = 42},
};

static const struct schema_node schema_envelope_members[] = {
    {.name = "organisation_id", .type = SCHEMA_STRING, .format = SCHEMA_FORMAT_UUID, .required = 1},
    {.name = "type", .type = SCHEMA_STRING, .pattern = "^[A-Za-z_]*$", .pattern_id = 1},
    {.name = "version", .type = SCHEMA_INTEGER, .has_minimum = 1, .minimum = 0},
};

const struct schema_node schema_payment_attributes = {
    .type = SCHEMA_OBJECT, .properties = schema_attributes_members, .property_count = 38,
};

const struct schema_node schema_payment_envelope = {
    .type = SCHEMA_OBJECT, .properties = schema_envelope_members, .property_count = 3,
};
