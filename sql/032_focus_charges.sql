-- FinOps FOCUS 1.2 shaped charges: one row per UTC day, attribution (tenant, team,
-- feature, environment, workflow), provider/model and token class (SkuMeter).
-- Usage rows come from spend_daily_uncorrected; each re-pricing correction is its
-- own row with ChargeClass = 'Correction', charged to the billing period of the
-- usage it corrects, so a month's BilledCost sums to that month's corrected total.
-- Prices come from the catalog the ledger was priced with, so List, Contracted,
-- Effective and Billed cost are the same amount. Own columns are prefixed x_.
CREATE VIEW IF NOT EXISTS focus_charges AS
SELECT
    cost AS BilledCost,
    cost AS EffectiveCost,
    cost AS ListCost,
    cost AS ContractedCost,
    provider AS BillingAccountId,
    provider_name AS BillingAccountName,
    'USD' AS BillingCurrency,
    toDateTime(toStartOfMonth(day), 'UTC') AS BillingPeriodStart,
    toDateTime(addMonths(toStartOfMonth(day), 1), 'UTC') AS BillingPeriodEnd,
    toDateTime(day, 'UTC') AS ChargePeriodStart,
    toDateTime(day + 1, 'UTC') AS ChargePeriodEnd,
    'Usage' AS ChargeCategory,
    charge_class AS ChargeClass,
    concat(
        model, ' ', lower(meter), ' for ', tenant_id,
        if(charge_class IS NULL, '', concat(' (correction: ', reason, ')'))
    ) AS ChargeDescription,
    'Usage-Based' AS ChargeFrequency,
    toDecimal128(quantity, 6) AS ConsumedQuantity,
    'Tokens' AS ConsumedUnit,
    toDecimal128(quantity, 6) / 1000000 AS PricingQuantity,
    '1M Tokens' AS PricingUnit,
    'Standard' AS PricingCategory,
    provider_name AS InvoiceIssuerName,
    provider_name AS ProviderName,
    provider_name AS PublisherName,
    provider_name AS ServiceProviderName,
    service_name AS ServiceName,
    'AI and Machine Learning' AS ServiceCategory,
    'Generative AI' AS ServiceSubcategory,
    model AS SkuId,
    meter AS SkuMeter,
    tenant_id AS SubAccountId,
    tenant_id AS SubAccountName,
    mapFilter(
        (k, v) -> v != '',
        map('team', team_id, 'workflow', workflow_id, 'feature', feature_name, 'environment', environment)
    ) AS Tags,
    provider AS x_Provider,
    team_id AS x_TeamId,
    workflow_id AS x_WorkflowId,
    workflow_name AS x_WorkflowName,
    feature_name AS x_FeatureName,
    environment AS x_Environment,
    price_source AS x_PriceSource,
    reason AS x_CorrectionReason,
    corrected_at AS x_CorrectedAt
FROM
(
    SELECT
        *,
        transform(
            provider,
            ['openai', 'anthropic', 'google', 'gemini', 'vertex', 'bedrock', 'azure', 'mistral'],
            ['OpenAI', 'Anthropic', 'Google', 'Google', 'Google', 'Amazon Web Services', 'Microsoft', 'Mistral AI'],
            provider
        ) AS provider_name,
        transform(
            provider,
            ['openai', 'anthropic', 'google', 'gemini', 'vertex', 'bedrock', 'azure', 'mistral'],
            ['OpenAI API', 'Anthropic API', 'Gemini API', 'Gemini API', 'Vertex AI', 'Amazon Bedrock', 'Azure OpenAI', 'Mistral AI API'],
            concat(provider, ' API')
        ) AS service_name
    FROM
    (
        SELECT
            day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name,
            provider, model, meter, quantity, cost,
            CAST(NULL, 'Nullable(String)') AS charge_class,
            '' AS price_source,
            '' AS reason,
            CAST(NULL, 'Nullable(DateTime64(3, \'UTC\'))') AS corrected_at
        FROM spend_daily_uncorrected
        ARRAY JOIN
            ['Input Tokens', 'Cached Input Tokens', 'Cache Write Tokens', 'Output Tokens', 'Reasoning Tokens'] AS meter,
            [
                input_tokens - cached_tokens - cache_write_tokens, cached_tokens, cache_write_tokens,
                output_tokens - reasoning_tokens, reasoning_tokens
            ] AS quantity,
            [cost_input_usd, cost_cached_input_usd, cost_cache_write_usd, cost_output_usd, cost_reasoning_usd] AS cost
        WHERE quantity > 0 OR cost != 0
        UNION ALL
        SELECT
            day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name,
            provider, model, meter, toUInt64(0) AS quantity, cost,
            CAST('Correction', 'Nullable(String)') AS charge_class,
            price_source,
            reason,
            CAST(corrected_at, 'Nullable(DateTime64(3, \'UTC\'))') AS corrected_at
        FROM
        (
            SELECT
                toDate(timestamp) AS day, tenant_id, team_id, feature_name, environment,
                workflow_id, workflow_name, provider, model,
                new_price_source AS price_source, reason,
                max(cost_corrections.corrected_at) AS corrected_at,
                sum(delta_cost_input_usd) AS d_input,
                sum(delta_cost_cached_input_usd) AS d_cached_input,
                sum(delta_cost_cache_write_usd) AS d_cache_write,
                sum(delta_cost_output_usd) AS d_output,
                sum(delta_cost_reasoning_usd) AS d_reasoning
            FROM cost_corrections FINAL
            GROUP BY ALL
        )
        ARRAY JOIN
            ['Input Tokens', 'Cached Input Tokens', 'Cache Write Tokens', 'Output Tokens', 'Reasoning Tokens'] AS meter,
            [d_input, d_cached_input, d_cache_write, d_output, d_reasoning] AS cost
        WHERE cost != 0
    )
);
