// The one storage account: the Functions host's storage (AzureWebJobsStorage), the Flex
// Consumption deployment package, the `artifacts` blob container, the coordinator's tables and
// the timers' queues (fleet-passes and its poison queue).
// Entra ID only: shared keys are disabled, so no connection string can exist; factories upload
// artifacts through user-delegation SAS URLs, which Entra ID signs.
param location string
param tags object
param name string
@description('Blob containers to create (the deployment package container, artifacts).')
param containerNames array
@description('Tables the coordinator uses (fleet/store/azure.py TABLES).')
param tableNames array
@description('Queues the timers send to, each with its poison queue (fleet/store/azure.py APP_QUEUES).')
param queueNames array
@allowed([
  'Enabled'
  'Disabled'
])
@description('Disabled: reachable only through the private endpoints of app/network.bicep.')
param publicNetworkAccess string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35: the network rule follows the publicNetworkAccess parameter: Allow by default (factories on any network upload artifacts with user-delegation SAS URLs; every request needs Entra ID, shared keys are disabled), Deny with publicNetworkAccess=Disabled (private endpoints only)
  //checkov:skip=CKV_AZURE_59: public network access follows the publicNetworkAccess parameter: Enabled by default (factories on any network upload artifacts); anonymous blob access is off and shared keys are disabled. Disabled: private endpoints only (app/network.bicep)
  //checkov:skip=CKV_AZURE_206: locally redundant by choice: the account holds transient coordination state (heartbeats, rate-limit buckets, pending commands) and build artifacts; the system of record is Cosmos DB
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for tableName in tableNames: {
    parent: tableService
    name: tableName
  }
]

// Created here, not left to the app's first start: a timer's first tick sends to fleet-passes,
// and the host's queue triggers listen on both queues from the start.
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output queueEndpoint string = storage.properties.primaryEndpoints.queue
