// The storage account behind AzureWebJobsStorage: the Functions host (keys, timer leases),
// the Flex Consumption deployment package, and the app's tables (dedup, jobs, audit, ...).
// Identity only: shared keys are disabled, so no connection string can reach it.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the storage account.')
param location string

@description('Tags for the storage account.')
param tags object = {}

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string = 'app-package'

@description('Prefix of the app\'s table names (STORAGE_TABLE_PREFIX).')
param tablePrefix string

@description('Principal id of the app identity.')
param appPrincipalId string

@description('Optional operator principal (the one running azd) given table access for `python -m shared.cli`.')
param operatorPrincipalId string = ''

@description('Type of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// The tables the code uses (shared/storage/tables.py, TABLES). The code also creates them on
// first use; declaring them makes the deployment complete before the first message arrives.
// tests/unit/test_infra.py checks this list against the code.
var appTables = [
  'dedup'
  'jobs'
  'audit'
  'auditrecords'
  'watermarks'
  'providerids'
  'optouts'
  'contacts'
  'gates'
  'pacing'
  'snapshots'
  'leases'
  'deadletters'
  'pollstatus'
  'silence'
]

// Built-in roles for the app identity, least privilege for what the host and the code do.
var appRoles = [
  {
    role: 'Storage Blob Data Owner' // host keys and timer leases (azure-webjobs-*), Flex deployment package
    id: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  }
  {
    role: 'Storage Queue Data Contributor' // host queues; the storage-queue backend if ever selected
    id: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  }
  {
    role: 'Storage Table Data Contributor' // the app's tables
    id: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  }
]

// Built-in role: Storage Table Data Contributor (operator: audit and replay from the CLI).
var tableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for table in appTables: {
  parent: tableService
  name: '${tablePrefix}${table}'
}]

resource appRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for assignment in appRoles: {
  name: guid(storage.id, appPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.id))
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'ml-connector app: ${assignment.role}'
  }
}]

resource operatorTableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', tableDataContributorRoleId))
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', tableDataContributorRoleId) // Storage Table Data Contributor
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'ml-connector operator: audit and replay from the CLI'
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
output tableNames array = [for table in appTables: '${tablePrefix}${table}']
