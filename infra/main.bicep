// agent-fleet: everything one deployment needs, in one resource group.
//
//   azd up                                   (provision + deploy, see azure.yaml)
//   az deployment sub create -l <region> -f infra/main.bicep -p environmentName=<name> ...
//
// Identity, not keys: the Function App's system-assigned identity reaches Cosmos DB, Blob, Table
// and Queue Storage, Key Vault and Application Insights through data-plane role assignments,
// each at the narrowest scope the app's use allows (app/rbac.bicep); Cosmos DB local auth and
// the storage account's shared keys are disabled. Secrets are in Key Vault (app/keyvault.bicep),
// the app settings only refer to them. publicNetworkAccess=Disabled puts Storage, Cosmos DB and
// Key Vault behind private endpoints in a virtual network the app joins (app/network.bicep).
// factorySets (off by default) adds elastic factories: Container Apps Jobs that demand starts
// (app/factories.bicep).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd): names the resource group and seeds a unique token for every resource name.')
param environmentName string

@minLength(1)
@description('Region for every resource but the Static Web App. It must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Region of the Static Web App (a global service with a few regions to hold its metadata).')
@allowed([
  'centralus'
  'eastasia'
  'eastus2'
  'westeurope'
  'westus2'
])
param staticWebAppLocation string = 'westeurope'

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@secure()
@minLength(1)
@description('FLEET_OPERATOR_TOKENS: comma-separated bootstrap operator tokens, each "sha256:<hex digest of a flo_ token>" (preferred: the plaintext token is then stored nowhere) or a plaintext flo_ token. `python -m scripts.deploy.check token` makes one.')
param operatorTokens string

@description('Cosmos DB capacity: "serverless" (pay per request, the default) or "provisioned" (autoscale throughput on the container).')
@allowed([
  'serverless'
  'provisioned'
])
param cosmosCapacityMode string = 'serverless'

@minValue(1000)
@description('Provisioned mode only: the container\'s autoscale maximum RU/s (it scales between 10% and 100% of it).')
param cosmosAutoscaleMaxThroughput int = 1000

@description('REAPER_SCHEDULE: NCRONTAB (six fields, seconds first) of the lease reaper.')
param reaperSchedule string = '*/15 * * * * *'

@description('HEALER_SCHEDULE: NCRONTAB of the self-healer.')
param healerSchedule string = '*/30 * * * * *'

@description('METRICS_SCHEDULE: NCRONTAB of the metrics writer.')
param metricsSchedule string = '0 */5 * * * *'

@description('FLEET_TOKEN_GRACE_SECONDS: how long a rotated-out factory token keeps working; empty: the code\'s default (300).')
param tokenGraceSeconds string = ''

@description('FLEET_ENROLLMENT_TTL_SECONDS: how long an enrollment token lives when its creator names no expiry; empty: the code\'s default (604800, 7 days).')
param enrollmentTtlSeconds string = ''

@description('HEALER_DOWN_AFTER_SECONDS; empty: the code\'s default (600).')
param healerDownAfterSeconds string = ''

@description('HEALER_STALL_AFTER_SECONDS; empty: the code\'s default (900).')
param healerStallAfterSeconds string = ''

@description('HEALER_NEVER_STARTED_SECONDS; empty: the code\'s default (300).')
param healerNeverStartedSeconds string = ''

@description('HEALER_PRUNE_AFTER_SECONDS; empty: the code\'s default (7 days).')
param healerPruneAfterSeconds string = ''

@description('The timers\' passes run from the fleet-passes queue: messages the host fetches at once per instance (host.json extensions.queues.batchSize, at most 32).')
@minValue(1)
@maxValue(32)
param queueBatchSize int = 16

@description('Deliveries of a failing pass before its message goes to fleet-passes-poison and the product\'s pass_failed alert is raised (host.json extensions.queues.maxDequeueCount).')
@minValue(1)
param queueMaxDequeueCount int = 5

@description('How long a failed pass\'s message stays invisible before its retry, as hh:mm:ss (host.json extensions.queues.visibilityTimeout).')
param queueVisibilityTimeout string = '00:00:10'

@description('HEALER_AVOID_GRACE_SECONDS: how long a job taken back from a factory it stalled on waits in the queue, no other live factory taking it, before it may return there; empty: the code\'s default (1800).')
param healerAvoidGraceSeconds string = ''

@description('FLEET_AGENT_EVENTS_PER_ATTEMPT: agent events one attempt may store; empty: the code\'s default (5000).')
param agentEventsPerAttempt string = ''

@description('FLEET_AGENT_EVENT_BYTES_PER_ATTEMPT: bytes of agent event payload JSON one attempt may store; empty: the code\'s default (5242880, 5 MiB).')
param agentEventBytesPerAttempt string = ''

@description('FLEET_ARTIFACTS_PER_ATTEMPT: artifacts one attempt may store; empty: the code\'s default (100).')
param artifactsPerAttempt string = ''

@description('STORE_MAX_CONNECTIONS: connections kept open to each store endpoint (Cosmos, Blob, Table); at least the host\'s concurrent calls. Empty: the code\'s default (32).')
param storeMaxConnections string = ''

@description('COSMOS_THROTTLE_RETRIES: SDK retries on 429 before a 503 store_unavailable; empty: the code\'s default (3).')
param cosmosThrottleRetries string = ''

@description('COSMOS_THROTTLE_MAX_WAIT_SECONDS: the SDK\'s longest back-off; empty: the code\'s default (5).')
param cosmosThrottleMaxWaitSeconds string = ''

@secure()
@description('TRACKER_ECHO_URL: where stage changes of tracker jobs are POSTed (http(s) URL; kept in Key Vault, as it may carry a token); empty: none.')
param trackerEchoUrl string = ''

@secure()
@description('TRACKER_ECHO_SECRET: signs those POSTs.')
param trackerEchoSecret string = ''

@secure()
@description('ALERT_WEBHOOK_URL: where alert events (raised, cleared) are POSTed (http(s) URL; kept in Key Vault, as it may carry a token); empty: none.')
param alertWebhookUrl string = ''

@secure()
@description('ALERT_WEBHOOK_SECRET: signs those POSTs (X-Fleet-Signature-256).')
param alertWebhookSecret string = ''

@allowed([
  'Enabled'
  'Disabled'
])
@description('Public network access of Storage, Cosmos DB and Key Vault. Disabled: each is reachable only through a private endpoint in a virtual network that the Function App joins (app/network.bicep); factories and browsers then need a network path to the storage account for artifacts (docs/deployment.md). The API and the web UI stay public.')
param publicNetworkAccess string = 'Enabled'

@description('publicNetworkAccess=Disabled only: the virtual network\'s address space and its two subnets (the app\'s, at least /27 and unused elsewhere, and the private endpoints\').')
param privateNetworkAddressSpace object = {
  addressPrefix: '10.42.0.0/16'
  appSubnetPrefix: '10.42.1.0/24'
  privateEndpointSubnetPrefix: '10.42.2.0/24'
}

@minValue(1)
@maxValue(1000)
@description('Flex Consumption: the most instances the app scales out to.')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Flex Consumption: memory per instance (MB).')
param instanceMemoryMB int = 2048

@description('Elastic factories (app/factories.bicep, docs/deployment.md): one Container Apps Job per capability set, each execution one ephemeral factory started by the set\'s demand. Each entry: {name: 1-20 lowercase letters, digits or -, capabilities: the exact set its jobs require, engine?: the preset it runs (claude, codex, aider), maxExecutions?: overrides factoryMaxExecutions}. Empty (the default): none, and no Container Apps environment.')
param factorySets array = []

@description('Elastic factories: the image (this repository\'s Dockerfile, built and pushed by the operator), e.g. myregistry.azurecr.io/fleet-factory:1.')
param factoryImage string = ''

@description('Elastic factories: the registry the image is pulled from with the factories\' identity (an Azure Container Registry where that identity has AcrPull); empty: a public image.')
param factoryRegistryServer string = ''

@description('Elastic factories: the product they enroll in and whose demand starts them.')
param factoryProduct string = 'default'

@description('Elastic factories: the Key Vault secret holding the product\'s scaler token (fls_..., POST /api/fleet/scaler-tokens); it must exist before the deployment.')
param factoryScalerTokenSecret string = 'fleet-scaler-token'

@description('Elastic factories: the Key Vault secret holding the product\'s enrollment token (fle_...); it must exist before the deployment.')
param factoryEnrollmentTokenSecret string = 'fleet-enrollment-token'

@description('Elastic factories: engine credentials from Key Vault, environment variable -> secret name, e.g. {"ANTHROPIC_API_KEY": "anthropic-api-key"}; each secret must exist before the deployment.')
param factoryEngineSecrets object = {}

@minValue(1)
@description('Elastic factories: the most executions (factories) a capability set runs at once, unless its entry says otherwise.')
param factoryMaxExecutions int = 5

@minValue(10)
@description('Elastic factories: how often (seconds) each set\'s demand is polled.')
param factoryPollingInterval int = 30

@minValue(60)
@description('Elastic factories: the longest one execution runs (seconds); then it is stopped (SIGTERM: its jobs are released with their checkpoints) and demand starts another.')
param factoryReplicaTimeout int = 14400

@minValue(1)
@description('Elastic factories: an execution deregisters and exits after this many seconds idle (fleet-factory run --exit-when-idle).')
param factoryIdleSeconds int = 300

@description('Elastic factories: vCPUs per execution, a decimal string (Consumption profile: 0.25 to 4, with factoryMemory twice as many Gi).')
param factoryCpu string = '1.0'

@description('Elastic factories: memory per execution, e.g. 2Gi.')
param factoryMemory string = '2Gi'

var abbrs = loadJsonContent('abbreviations.json')
// The data layout the coordinator expects (tests/unit/test_infra.py checks it against the code).
var fleet = loadJsonContent('fleet.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
// Flex Consumption deploys the app package from this blob container.
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}'
var privateNetworking = publicNetworkAccess == 'Disabled'
var logAnalyticsName = '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
var elasticFactories = !empty(factorySets)
// The secret app settings, by setting name: stored in Key Vault (an empty one is not stored,
// that feature is off), set on the app as Key Vault references (app/api.bicep).
var secretSettings = {
  TRACKER_ECHO_URL: trackerEchoUrl
  TRACKER_ECHO_SECRET: trackerEchoSecret
  ALERT_WEBHOOK_URL: alertWebhookUrl
  ALERT_WEBHOOK_SECRET: alertWebhookSecret
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: logAnalyticsName
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    containerNames: [
      deploymentContainerName
      fleet.storage.artifactsContainer
    ]
    tableNames: fleet.storage.tables
    queueNames: fleet.storage.queues
    publicNetworkAccess: publicNetworkAccess
  }
}

module cosmos 'app/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.documentDBDatabaseAccounts}${resourceToken}'
    databaseName: fleet.cosmos.database
    containerName: fleet.cosmos.container
    partitionKeyPath: fleet.cosmos.partitionKey
    defaultTtl: fleet.cosmos.defaultTtl
    indexingPolicy: fleet.cosmos.indexingPolicy
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    publicNetworkAccess: publicNetworkAccess
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    secrets: secretSettings
    publicNetworkAccess: publicNetworkAccess
  }
}

module network 'app/network.bicep' = if (privateNetworking) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    endpointNamePrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}'
    addressSpace: privateNetworkAddressSpace
    storageAccountName: storage.outputs.name
    cosmosAccountName: cosmos.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

module webui 'app/webui.bicep' = {
  name: 'webui'
  scope: rg
  params: {
    location: staticWebAppLocation
    tags: tags
    name: '${abbrs.webStaticSites}${resourceToken}'
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    location: location
    tags: tags
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    cosmosAccountName: cosmos.outputs.name
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabase: fleet.cosmos.database
    cosmosContainer: fleet.cosmos.container
    artifactsContainer: fleet.storage.artifactsContainer
    operatorTokens: operatorTokens
    reaperSchedule: reaperSchedule
    healerSchedule: healerSchedule
    metricsSchedule: metricsSchedule
    tokenGraceSeconds: tokenGraceSeconds
    enrollmentTtlSeconds: enrollmentTtlSeconds
    healerDownAfterSeconds: healerDownAfterSeconds
    healerStallAfterSeconds: healerStallAfterSeconds
    healerNeverStartedSeconds: healerNeverStartedSeconds
    healerPruneAfterSeconds: healerPruneAfterSeconds
    healerAvoidGraceSeconds: healerAvoidGraceSeconds
    queueBatchSize: queueBatchSize
    passesQueue: fleet.storage.queues[0]
    queueMaxDequeueCount: queueMaxDequeueCount
    queueVisibilityTimeout: queueVisibilityTimeout
    agentEventsPerAttempt: agentEventsPerAttempt
    agentEventBytesPerAttempt: agentEventBytesPerAttempt
    artifactsPerAttempt: artifactsPerAttempt
    cosmosThrottleRetries: cosmosThrottleRetries
    storeMaxConnections: storeMaxConnections
    cosmosThrottleMaxWaitSeconds: cosmosThrottleMaxWaitSeconds
    keyVaultName: keyVault.outputs.name
    secretsGiven: {
      TRACKER_ECHO_URL: !empty(trackerEchoUrl)
      TRACKER_ECHO_SECRET: !empty(trackerEchoSecret)
      ALERT_WEBHOOK_URL: !empty(alertWebhookUrl)
      ALERT_WEBHOOK_SECRET: !empty(alertWebhookSecret)
    }
    appSubnetId: privateNetworking ? network.outputs.appSubnetId : ''
    corsAllowedOrigins: [
      webui.outputs.url
    ]
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

// Container Apps names follow azd's abbreviations (cae-, id-, caj-).
module factories 'app/factories.bicep' = if (elasticFactories) {
  name: 'factories'
  scope: rg
  dependsOn: [
    monitoring
  ]
  params: {
    location: location
    tags: tags
    environmentName: 'cae-${resourceToken}'
    identityName: 'id-factories-${resourceToken}'
    jobNamePrefix: 'caj-${take(resourceToken, 6)}'
    logAnalyticsName: logAnalyticsName
    keyVaultName: keyVault.outputs.name
    apiUrl: api.outputs.url
    sets: factorySets
    image: factoryImage
    registryServer: factoryRegistryServer
    product: factoryProduct
    scalerTokenSecretName: factoryScalerTokenSecret
    enrollmentTokenSecretName: factoryEnrollmentTokenSecret
    engineSecrets: factoryEngineSecrets
    maxExecutions: factoryMaxExecutions
    pollingInterval: factoryPollingInterval
    replicaTimeout: factoryReplicaTimeout
    idleSeconds: factoryIdleSeconds
    cpu: factoryCpu
    memory: factoryMemory
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output API_URL string = api.outputs.url
output AZURE_STATIC_WEB_APP_NAME string = webui.outputs.name
output WEBUI_URL string = webui.outputs.url
output COSMOS_ACCOUNT_NAME string = cosmos.outputs.name
output COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output COSMOS_DATABASE string = fleet.cosmos.database
output COSMOS_CONTAINER string = fleet.cosmos.container
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_CONTAINER_APPS_ENVIRONMENT_NAME string = elasticFactories ? factories.outputs.environmentName : ''
output FACTORY_IDENTITY_PRINCIPAL_ID string = elasticFactories ? factories.outputs.identityPrincipalId : ''
