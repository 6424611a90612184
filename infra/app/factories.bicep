// Elastic factories: one Container Apps Job per capability set, started by demand. Deployed
// only when main.bicep's factorySets lists a set.
//
// KEDA's metrics-api scaler polls GET /api/fleet/demand?capabilities=<the set> with the
// product's scaler token (fls_..., bearer) and reads `routable`: the queued jobs requiring
// exactly that set that a factory could take now. Each routable job starts one execution
// (targetValue 1), up to the set's maximum; none when there are none (minExecutions 0). An
// execution is one ephemeral factory: it enrolls with the product's enrollment token, claims
// until idle for idleSeconds, deregisters and exits 0 (`fleet-factory run --exit-when-idle`).
//
// Secrets stay in Key Vault: the jobs' secrets are Key Vault references resolved with a
// user-assigned identity that may read those secrets only (Key Vault Secrets User on each
// secret, granted before the jobs exist), and that the containers themselves cannot use
// (identitySettings lifecycle None): the agents a factory runs never hold an Azure identity.
param location string
param tags object
@description('The Container Apps environment (one for every set).')
param environmentName string
@description('The identity that reads the secrets and pulls the image.')
param identityName string
@description('Each set\'s job is named <prefix>-<set name> (a job name has at most 32 characters).')
param jobNamePrefix string
@description('The Log Analytics workspace of app/monitoring.bicep: the environment\'s logs go there.')
param logAnalyticsName string
@description('The vault holding the tokens and the engines\' keys (app/keyvault.bicep).')
param keyVaultName string
@description('The coordinator\'s URL, https://<function app host> (app/api.bicep).')
param apiUrl string
@description('The capability sets: {name, capabilities, engine?, maxExecutions?} each (main.bicep factorySets).')
param sets array
@description('The image the jobs run (the repository\'s Dockerfile).')
param image string
@description('The registry to pull the image from with the identity (AcrPull); empty: a public image.')
param registryServer string
@description('The product the factories enroll in; its scaler token reads its demand.')
param product string
@description('Vault secret holding the product\'s scaler token (fls_...).')
param scalerTokenSecretName string
@description('Vault secret holding the product\'s enrollment token (fle_...).')
param enrollmentTokenSecretName string
@description('Engine credentials: environment variable -> the vault secret holding its value.')
param engineSecrets object
param maxExecutions int
param pollingInterval int
param replicaTimeout int
param idleSeconds int
@description('vCPUs per factory, as a decimal string (Consumption: 0.25 to 4, memory twice as many Gi).')
param cpu string
param memory string

// Key Vault Secrets User: read secret values; no keys or certificates, no writes.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
// The jobs' own names for the vault's secrets.
var scalerSecret = 'scaler-token'
var enrollmentSecret = 'enrollment-token'
var engineSecretList = [
  for entry in items(engineSecrets): {
    variable: entry.key
    vaultSecret: entry.value
    jobSecret: 'engine-${toLower(entry.value)}'
  }
]
var tokenSecretNames = [
  scalerTokenSecretName
  enrollmentTokenSecretName
]
var engineVaultSecrets = [for entry in items(engineSecrets): entry.value]
// Every vault secret the jobs read, which is every one the identity may read.
var vaultSecretNames = concat(tokenSecretNames, engineVaultSecrets)

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// The secrets must exist before the deployment: each is a role assignment's scope.
resource vaultSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [
  for name in vaultSecretNames: {
    parent: vault
    name: name
  }
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// Per secret, not the vault: the webhook and tracker secrets stay out of the factories' reach.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (name, i) in vaultSecretNames: {
    name: guid(vaultSecrets[i].id, identity.id, keyVaultSecretsUser)
    scope: vaultSecrets[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Logs through Azure Monitor diagnostic settings into the existing workspace: no workspace
// shared key is handed to the environment.
resource appEnvironment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs'
  scope: appEnvironment
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        category: 'ContainerAppConsoleLogs'
        enabled: true
      }
      {
        category: 'ContainerAppSystemLogs'
        enabled: true
      }
    ]
  }
}

var tokenSecrets = [
  {
    name: scalerSecret
    keyVaultUrl: '${vault.properties.vaultUri}secrets/${scalerTokenSecretName}'
    identity: identity.id
  }
  {
    name: enrollmentSecret
    keyVaultUrl: '${vault.properties.vaultUri}secrets/${enrollmentTokenSecretName}'
    identity: identity.id
  }
]
var engineJobSecrets = [
  for s in engineSecretList: {
    name: s.jobSecret
    keyVaultUrl: '${vault.properties.vaultUri}secrets/${s.vaultSecret}'
    identity: identity.id
  }
]
var registryCredentials = [
  {
    server: registryServer
    identity: identity.id
  }
]
var engineEnv = [
  for s in engineSecretList: {
    name: s.variable
    secretRef: s.jobSecret
  }
]
// The factory's settings (factory_cli/config.py): the coordinator, the enrollment token (never
// passed on to the engine), the product it is checked against. FLEET_CAPS and FLEET_ENGINE
// come per set, below.
var factoryEnv = [
  {
    name: 'FLEET_API'
    value: '${apiUrl}/api'
  }
  {
    name: 'FLEET_ENROLLMENT_TOKEN'
    secretRef: enrollmentSecret
  }
  {
    name: 'FLEET_PRODUCT'
    value: product
  }
  // Stopped early (the replica timeout's SIGTERM), it leaves the fleet too, not only when idle.
  {
    name: 'FLEET_DEREGISTER_ON_EXIT'
    value: 'true'
  }
  // Within the 30 s a stopped replica gets between SIGTERM and SIGKILL (the default; jobs
  // expose no other): its jobs are released first.
  {
    name: 'FLEET_GRACE_SECONDS'
    value: '20'
  }
]
// Per set: the capabilities it offers beyond those it detects (the set itself), and the engine
// preset it runs (empty: the first engine on PATH).
var setEnv = [
  for set in sets: [
    {
      name: 'FLEET_CAPS'
      value: join(set.capabilities, ',')
    }
    {
      name: 'FLEET_ENGINE'
      value: set.?engine ?? ''
    }
  ]
]

resource jobs 'Microsoft.App/jobs@2025-01-01' = [
  for (set, i) in sets: {
    name: '${jobNamePrefix}-${set.name}'
    location: location
    tags: union(tags, {
      'fleet-capabilities': join(set.capabilities, ',')
    })
    identity: {
      type: 'UserAssigned'
      userAssignedIdentities: {
        '${identity.id}': {}
      }
    }
    // The Key Vault references resolve with the identity's roles.
    dependsOn: [
      secretsUser
    ]
    properties: {
      environmentId: appEnvironment.id
      workloadProfileName: 'Consumption'
      configuration: {
        triggerType: 'Event'
        // The longest one factory runs: then SIGTERM, and a new execution if demand remains.
        replicaTimeout: replicaTimeout
        // A factory that fails is not restarted in place: the next poll starts a new one if
        // the demand is still there.
        replicaRetryLimit: 0
        // Platform use only (Key Vault references, image pulls): no token for the containers.
        identitySettings: [
          {
            identity: identity.id
            lifecycle: 'None'
          }
        ]
        secrets: concat(tokenSecrets, engineJobSecrets)
        registries: empty(registryServer) ? [] : registryCredentials
        eventTriggerConfig: {
          parallelism: 1
          replicaCompletionCount: 1
          scale: {
            minExecutions: 0
            maxExecutions: set.?maxExecutions ?? maxExecutions
            pollingInterval: pollingInterval
            rules: [
              {
                name: 'demand'
                type: 'metrics-api'
                metadata: {
                  url: '${apiUrl}/api/fleet/demand?capabilities=${join(set.capabilities, ',')}'
                  format: 'json'
                  valueLocation: 'routable'
                  targetValue: '1'
                  authMode: 'bearer'
                }
                // The scaler token names its product: no X-Fleet-Product header is needed
                // (the metrics-api scaler sends none).
                auth: [
                  {
                    secretRef: scalerSecret
                    triggerParameter: 'token'
                  }
                ]
              }
            ]
          }
        }
      }
      template: {
        containers: [
          {
            name: 'factory'
            image: image
            // The image's entrypoint is fleet-factory; an execution enrolls first (a new
            // factory each time, named after its replica's host name), then runs the args.
            command: [
              '/bin/sh'
              '-c'
              'fleet-factory enroll --product "$FLEET_PRODUCT" && exec fleet-factory "$@"'
              'fleet-factory'
            ]
            args: [
              'run'
              '--exit-when-idle'
              string(idleSeconds)
            ]
            env: concat(factoryEnv, setEnv[i], engineEnv)
            resources: {
              cpu: json(cpu)
              memory: memory
            }
          }
        ]
      }
    }
  }
]

output environmentName string = appEnvironment.name
output identityPrincipalId string = identity.properties.principalId
