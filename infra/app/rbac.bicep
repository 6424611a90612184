// Data-plane roles for the Function App's identity, each at the narrowest scope the app's use
// allows, and each named guid(scope, principal, role) so a redeploy finds the same assignment
// instead of failing on a duplicate. Deployed from app/api.bicep, before the app settings: the
// app's first start then finds its roles in place (Key Vault references resolve at start).
param principalId string
param storageAccountName string
param cosmosAccountName string
param cosmosDatabaseName string
param applicationInsightsName string
param keyVaultName string

// Built-in role definition ids (the same in every tenant).
var roles = {
  // Read, write and delete blobs and containers, and get the user-delegation key behind the
  // artifact SAS URLs; not Owner: no POSIX ACLs or ownership to manage. At account scope: the
  // host creates its own containers (azure-webjobs-hosts, -secrets) and a user-delegation key
  // is granted only at account scope or above.
  storageBlobDataContributor: 'ba92f5b4-2d11-453f-a403-e96b0029c9fe'
  // The heartbeats, ratelimits and commands tables. At account scope: the app creates missing
  // tables and its health check lists them (fleet/store/azure.py).
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // The fleet-passes queue and its poison queue: a timer tick sends each product's pass there,
  // and the host's queue triggers receive it, delete it, or move it to fleet-passes-poison.
  // Contributor, not Message Sender or Processor: the app does both. At account scope: the app
  // creates missing queues (fleet/store/azure.py), as the host does a missing poison queue.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Telemetry with Entra ID (Application Insights local auth is disabled).
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Read the secret settings' values (app/keyvault.bicep): secrets only, no keys or certificates.
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

// Cosmos DB Built-in Data Contributor: a Cosmos DB (data-plane) role, not an Azure RBAC role.
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' existing = {
  parent: cosmos
  name: cosmosDatabaseName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource blobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, principalId, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Scoped to the fleet database, not the account: no other database of the account is the app's.
// A Cosmos DB scope names the database as /dbs/<name> (not the ARM type sqlDatabases).
resource cosmosContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(database.id, principalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: principalId
    scope: '${cosmos.id}/dbs/${database.name}'
  }
}
