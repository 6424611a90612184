// The coordinator: a Flex Consumption Function App (Python 3.11, Linux) running function_app.py,
// with a system-assigned identity. Every app setting below is named exactly as the code reads it
// (fleet/settings.py, fleet/coordinator/fleet_health.py, the %...% timer schedules in
// fleet/timers.py); tests/unit/test_infra.py fails on a setting the code reads that is not set
// here, or one set here that nothing reads. No setting holds a key, and no secret: the webhook
// and tracker secrets (and URLs, which may carry a token) are Key Vault references, resolved by
// the platform with the app's identity.
param location string
param tags object
param name string
param planName string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param cosmosAccountName string
param cosmosEndpoint string
param cosmosDatabase string
param cosmosContainer string
param artifactsContainer string
@secure()
param operatorTokens string
param reaperSchedule string
param healerSchedule string
param metricsSchedule string
param tokenGraceSeconds string
param enrollmentTtlSeconds string
param healerDownAfterSeconds string
param healerStallAfterSeconds string
param healerNeverStartedSeconds string
param healerPruneAfterSeconds string
param healerAvoidGraceSeconds string
param queueBatchSize int
@description('The queue the timers hand each product\'s pass to (FLEET_PASSES_QUEUE); its poison queue adds -poison. Both are made by app/storage.bicep.')
param passesQueue string
param queueMaxDequeueCount int
param queueVisibilityTimeout string
param agentEventsPerAttempt string
param agentEventBytesPerAttempt string
param artifactsPerAttempt string
param cosmosThrottleRetries string
param storeMaxConnections string
param cosmosThrottleMaxWaitSeconds string
@description('The Key Vault holding the secret settings (app/keyvault.bicep).')
param keyVaultName string
@description('Secret setting name -> whether its value was given (and so stored in the vault under the setting\'s name in kebab case). One not given stays empty: that feature is off.')
param secretsGiven object
@description('Private networking: the subnet the app joins (app/network.bicep); empty: none.')
param appSubnetId string
@description('Origins allowed to call the API from a browser (the web UI).')
param corsAllowedOrigins array
param maximumInstanceCount int
param instanceMemoryMB int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// A secret setting's value: a reference to the latest version of its secret (versionless, so a
// redeployment's new value is picked up when the app restarts, or within a day).
var secretUri = '${keyVault.properties.vaultUri}secrets'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption needs zone-redundant (ZRS) host storage and a region that offers it; off by default to keep an idle fleet cheap (leases and the reaper make an instance loss a delay, not a lost job)
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222: the API is public by design: factories on any network and the web UI call it; every route but /api/health requires a bearer token checked by the app (fleet/coordinator/tokens.py)
  //checkov:skip=CKV_AZURE_17: no client certificates: factories and browsers authenticate with bearer tokens; mutual TLS would need a certificate on every factory and browser
  //checkov:skip=CKV_AZURE_212: Flex Consumption has no worker count: it scales each function from zero up to maximumInstanceCount
  //checkov:skip=CKV_AZURE_213: Flex Consumption does not support the platform health check; GET /api/health exists and scripts/deploy/check.py probes it after each deploy
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Flex Consumption virtual network integration (publicNetworkAccess=Disabled): the app
    // reaches Storage, Cosmos DB and Key Vault through their private endpoints.
    virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      cors: {
        allowedOrigins: corsAllowedOrigins
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// The app's data-plane roles, granted before its settings are written: the settings' Key Vault
// references resolve when the app (re)starts with them, and need the role by then.
module rbac 'rbac.bicep' = {
  name: 'rbac'
  params: {
    principalId: functionApp.identity.principalId
    storageAccountName: storage.name
    cosmosAccountName: cosmosAccountName
    cosmosDatabaseName: cosmosDatabase
    applicationInsightsName: applicationInsights.name
    keyVaultName: keyVault.name
  }
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads every sites/config resource as the site's web config; this one holds only
  // app settings, so the web-config checks below do not apply to it.
  //checkov:skip=CKV_AZURE_13: App Service Authentication (Easy Auth) would reject the factories' bearer tokens; the app authenticates every request itself (fleet/coordinator/tokens.py)
  //checkov:skip=CKV_AZURE_63: HTTP logging is an App Service web-server log that Flex Consumption does not offer; requests go to Application Insights
  //checkov:skip=CKV_AZURE_65: detailed error pages are a web-server setting Flex Consumption does not offer; errors go to Application Insights
  //checkov:skip=CKV_AZURE_66: failed request tracing is a web-server setting Flex Consumption does not offer; failures go to Application Insights
  //checkov:skip=CKV_AZURE_80: .NET Framework version: not applicable to a Python app
  //checkov:skip=CKV_AZURE_88: Azure Files content share: not applicable, Flex Consumption deploys from a blob container
  //checkov:skip=CKV_AZURE_222: not a network setting (see the Function App above: the API is public by design)
  parent: functionApp
  name: 'appsettings'
  dependsOn: [
    rbac
  ]
  properties: {
    FLEET_STORE: 'azure'
    // Cosmos DB through the app's identity: an endpoint and no key (DefaultAzureCredential).
    COSMOS__accountEndpoint: cosmosEndpoint
    COSMOS_DATABASE: cosmosDatabase
    COSMOS_CONTAINER: cosmosContainer
    COSMOS_THROTTLE_RETRIES: cosmosThrottleRetries
    STORE_MAX_CONNECTIONS: storeMaxConnections
    COSMOS_THROTTLE_MAX_WAIT_SECONDS: cosmosThrottleMaxWaitSeconds
    // Host storage and the coordinator's tables, blobs and queues, through the same identity:
    // the timers send each product's pass to fleet-passes, and the host's queue triggers
    // receive it. The service URIs come from the account, so sovereign clouds work too.
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    ARTIFACTS_CONTAINER: artifactsContainer
    // The timers' %...% schedules must resolve, or the host refuses to index the functions.
    REAPER_SCHEDULE: reaperSchedule
    HEALER_SCHEDULE: healerSchedule
    METRICS_SCHEDULE: metricsSchedule
    FLEET_OPERATOR_TOKENS: operatorTokens
    // Empty: the code's default.
    FLEET_TOKEN_GRACE_SECONDS: tokenGraceSeconds
    FLEET_ENROLLMENT_TTL_SECONDS: enrollmentTtlSeconds
    HEALER_DOWN_AFTER_SECONDS: healerDownAfterSeconds
    HEALER_STALL_AFTER_SECONDS: healerStallAfterSeconds
    HEALER_NEVER_STARTED_SECONDS: healerNeverStartedSeconds
    HEALER_PRUNE_AFTER_SECONDS: healerPruneAfterSeconds
    HEALER_AVOID_GRACE_SECONDS: healerAvoidGraceSeconds
    // The queue of the timers' passes: the code sends to it and the queue triggers' bindings
    // name it (%FLEET_PASSES_QUEUE%), so the host must resolve it or index no function.
    FLEET_PASSES_QUEUE: passesQueue
    // The host's queue triggers (the timers' passes): host.json's extensions.queues, set
    // per deployment.
    AzureFunctionsJobHost__extensions__queues__batchSize: string(queueBatchSize)
    AzureFunctionsJobHost__extensions__queues__maxDequeueCount: string(queueMaxDequeueCount)
    AzureFunctionsJobHost__extensions__queues__visibilityTimeout: queueVisibilityTimeout
    FLEET_AGENT_EVENTS_PER_ATTEMPT: agentEventsPerAttempt
    FLEET_AGENT_EVENT_BYTES_PER_ATTEMPT: agentEventBytesPerAttempt
    FLEET_ARTIFACTS_PER_ATTEMPT: artifactsPerAttempt
    // The tracker bridge's echo (optional; empty: off), from Key Vault.
    TRACKER_ECHO_URL: secretsGiven.TRACKER_ECHO_URL ? '@Microsoft.KeyVault(SecretUri=${secretUri}/tracker-echo-url/)' : ''
    TRACKER_ECHO_SECRET: secretsGiven.TRACKER_ECHO_SECRET ? '@Microsoft.KeyVault(SecretUri=${secretUri}/tracker-echo-secret/)' : ''
    // The alert webhook (optional; empty: off), from Key Vault.
    ALERT_WEBHOOK_URL: secretsGiven.ALERT_WEBHOOK_URL ? '@Microsoft.KeyVault(SecretUri=${secretUri}/alert-webhook-url/)' : ''
    ALERT_WEBHOOK_SECRET: secretsGiven.ALERT_WEBHOOK_SECRET ? '@Microsoft.KeyVault(SecretUri=${secretUri}/alert-webhook-secret/)' : ''
    // Read by the Functions host: telemetry, sent with the identity (local auth is off).
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  }
}

// Deployments (azd, `func azure functionapp publish`) authenticate with Entra ID: no FTP or
// basic-auth publishing credentials.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
output principalId string = functionApp.identity.principalId
